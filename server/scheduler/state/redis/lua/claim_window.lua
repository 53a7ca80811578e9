-- claim_window(name, now) -> false (closed) | {'done', session_view, its answer or false} |
-- {'choose', summary version, free slots, window, others, passed by} (locality: lua/locality.lua)
-- A healthy session with a summary and room, and several queued executions of the best
-- priority it can run (with the holder wait, one that other bots may hold more of is
-- enough): the first WINDOW + free - 1 of them for Python to choose among (then
-- claim_chosen). Otherwise the claim of claim.lua, done here, and the call's answer
-- (locality.answer_ready).
local name, now = arg(1), arg(2)
local f = redis.call('HMGET', key('s', name), 'healthy', 'offer', 'sv')
if not f[1] then return false end
local free = free_capacity(name)
locality.claiming(name)
if f[1] == '1' and free > 0 and redis.call('HSTRLEN', key('s', name), 'sum') > 0 then
  local window, others, skipped = locality.window(name, f[2], WINDOW + free - 1, now)
  if #window > 1 or (HOLDER_WAIT and #window == 1 and #others > 0) then
    return {'choose', f[3], free, window, others, skipped}
  end
end
locality.claim_rest(name, f[1], f[2], now)
return {'done', session_view(name), locality.answer_ready(name)}
