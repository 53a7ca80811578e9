-- hold(name, token, now) -> false (closed, or work was waiting: answer at once)
-- | the number of its last wake-up: the session waits for work in a call named by
-- token, until a later wake-up. Work queued since the call's claim (another replica
-- may queue between two scripts) is taken here, so it never waits beside a held call;
-- with locality, so is a lease given to it since (on its way back, placement.py), and
-- for a session with a summary, queued work is left to Python's claim: -1 (with the
-- holder wait, only work queued since its claim: what it left waits for other bots).
local name = arg(1)
local s = key('s', name)
local f = redis.call('HMGET', s, 'healthy', 'offer')
if not f[1] then return false end
if LOCALITY and locality.given_since_claim(name) then return false end
redis.call('HSET', s, 'hold', arg(2))
if f[1] == '1' and free_capacity(name) > 0 then
  if LOCALITY and locality.chooses(name, f[2]) then return -1 end
  local taken = false
  while free_capacity(name) > 0 and not (HOLDER_WAIT and locality.has_summary(name)) do
    local eid = pop_best(f[2])
    if not eid then break end
    assign(eid, name, arg(3))
    taken = true
  end
  if taken then return false end
  redis.call('ZADD', key('idle', f[2]), 'NX', redis.call('INCR', P .. 'holdseq'), name)
end
return tonumber(redis.call('HGET', s, 'wk') or '0')
