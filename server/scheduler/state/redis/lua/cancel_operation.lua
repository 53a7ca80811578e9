-- cancel_operation(name, response, stop response, now) -> 0 unknown | 1
local name, now = arg(1), arg(4)
local o = key('o', name)
local eid = redis.call('HGET', o, 'exec')
if not eid then return 0 end
local stage = redis.call('HGET', key('e', eid), 'stage')
if redis.call('HGET', o, 'cancel') or not stage or tonumber(stage) == COMPLETED then return 1 end
redis.call('HSET', o, 'cancel', arg(2), 'fat', now)
redis.call('ZADD', P .. 'finished', now, name)
expire_record(o)
redis.call('SREM', key('eo', eid), name)
if redis.call('SCARD', key('eo', eid)) == 0 then stop(eid, arg(3), now) end
notify_execution(eid)
return 1
