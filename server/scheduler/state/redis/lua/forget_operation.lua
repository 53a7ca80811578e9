-- forget_operation(name) -> 0 unknown | 1; its execution goes on
local name = arg(1)
local eid = redis.call('HGET', key('o', name), 'exec')
if not eid then return 0 end
redis.call('DEL', key('o', name))
redis.call('ZREM', P .. 'ops', name)
redis.call('ZREM', P .. 'finished', name)
redis.call('SREM', key('eo', eid), name)
return 1
