-- end_lease(lease id, response, now) -> 0 (no longer held) | 1
-- Finish the lease's execution with the response; its bot is told to stop it.
local lid, now = arg(1), arg(3)
local eid = redis.call('HGET', key('l', lid), 'exec')
if not eid then return 0 end
stop(eid, arg(2), now)
return 1
