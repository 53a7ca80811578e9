-- report(name, bot id, healthy '1'|'0', now, n, (lease id, completed '1'|'0') x n,
--        m, (lease id, partial metadata) x m[, locality: its summary, see locality.take_summary])
-- -> false (closed) | {'other', owner} | {'ok', registration, {listed lease ids}, {completed, ...}
-- [, locality: its summary's version]}
local name, bot, now = arg(1), arg(2), arg(4)
local s = key('s', name)
local f = redis.call('HMGET', s, 'bot', 'reg')
if not f[1] then return false end
if f[1] ~= bot then return {'other', f[1]} end
wake_session(name) -- a newer call supersedes a held one
redis.call('HINCRBY', key('sk', name), REPLICA, 1)
redis.call('HSET', s, 'healthy', arg(3))
if arg(3) ~= '1' then set_busy(name) end
local leases = key('sl', name)
local listed, completed, reported = {}, {}, {}
local i = 6
for _ = 1, tonumber(arg(5)) do
  local lid, done = arg(i), arg(i + 1) == '1'
  i = i + 2
  reported[lid] = true
  if redis.call('ZSCORE', leases, lid) then
    if not done then
      listed[#listed + 1] = lid
    else
      redis.call('ZREM', leases, lid)
      local l = redis.call('HMGET', key('l', lid), 'exec', 'at')
      local eid = l[1]
      redis.call('HSET', key('e', eid), 'lease', '')
      redis.call('HSET', P .. 'awaiting', eid, REPLICA)
      finish_streams(lid, now)
      redis.call('DEL', key('l', lid))
      local e = redis.call('HMGET', key('e', eid), 'inst', 'hash', 'size', 'fn', 'act', 'req', 'dnc', 'qat', 'tmo')
      completed[#completed + 1] = {lid, eid, e[1], e[2], e[3], e[4], e[5], e[6], e[7], e[8], l[2], e[9] or ''}
    end
  end
end
local sc = key('sc', name)
local cancelled = redis.call('HGETALL', sc)
for j = 1, #cancelled, 2 do
  if cancelled[j + 1] == '1' and not reported[cancelled[j]] then
    redis.call('HDEL', sc, cancelled[j])
    redis.call('DEL', key('cv', cancelled[j]))
  end
end
local m = tonumber(arg(i))
i = i + 1
for _ = 1, m do
  local lid, meta = arg(i), arg(i + 1)
  i = i + 2
  if redis.call('ZSCORE', leases, lid) then
    redis.call('HSET', key('e', redis.call('HGET', key('l', lid), 'exec')), 'pmeta', meta)
  end
end
if LOCALITY then return {'ok', f[2], listed, completed, locality.take_summary(name, i)} end
return {'ok', f[2], listed, completed}
