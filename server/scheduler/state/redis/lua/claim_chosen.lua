-- claim_chosen(name, now, k, execution id x k, m, (execution id, times passed over) x m,
-- w, (execution id, holder, extra progress) x w, o, execution id x o)
-- -> false (closed) | {'done', session_view, locality.answer_ready} (locality): of claim_window's window, ranked
-- by Python in the order the rule takes it, the first ones still queued, up to the
-- session's free slots (another replica or call may have taken some meanwhile); then
-- the rest of its free slots by (priority, arrival), like claim.lua. Those passed over
-- count it, while still queued (the fairness bound, locality.Dispatch.max_passes); one
-- that other claims passed over MAX_PASSES times since the window was read (bots claim
-- at once) is taken first instead, so the bound holds however many claim together.
-- Those Python found theirs wait for their holder from now (the holder wait), unless they do.
-- The o it holds already are no progress for the executions waiting for it (locality.own_work).
local name, now = arg(1), arg(2)
local f = redis.call('HMGET', key('s', name), 'healthy', 'offer')
if not f[1] then return false end
local k = tonumber(arg(3))
local i = 4 + k
local due = {}
for _ = 1, tonumber(arg(i)) do
  local e = key('e', arg(i + 1))
  local g = redis.call('HMGET', e, 'stage', 'pass')
  if tonumber(g[1]) == QUEUED then
    if tonumber(g[2] or 0) >= MAX_PASSES then
      due[#due + 1] = arg(i + 1)
    else
      redis.call('HINCRBY', e, 'pass', arg(i + 2))
    end
  end
  i = i + 2
end
for _ = 1, tonumber(arg(i + 1) or 0) do
  locality.await_holder(arg(i + 2), arg(i + 3), now, arg(i + 4))
  i = i + 3
end
for j = i + 3, i + 2 + tonumber(arg(i + 2) or 0) do locality.own[arg(j)] = name end
if f[1] == '1' then
  for _, eid in ipairs(due) do
    if free_capacity(name) <= 0 then break end
    if locality.take(eid) then assign(eid, name, now) end
  end
  for j = 4, 3 + k do
    if free_capacity(name) <= 0 then break end
    if locality.take(arg(j)) then assign(arg(j), name, now) end
  end
end
locality.claim_rest(name, f[1], f[2], now)
return {'done', session_view(name), locality.answer_ready(name)}
