-- watch_next(name, execution id, index) -> {'c', state} (cancelled: its final state)
-- | {'n'} (no change at index yet) | {'s', state at the index's event}
local name, eid = arg(1), arg(2)
if redis.call('HGET', key('o', name), 'cancel') then return {'c', op_state(name, eid)} end
local event = redis.call('LINDEX', key('eh', eid), tonumber(arg(3)))
if not event then return {'n'} end
return {'s', op_state(name, eid, event)}
