-- end_call(name, expires_at): a call of this replica ended
local name = arg(1)
if redis.call('EXISTS', key('s', name)) == 0 then return 0 end
if redis.call('HINCRBY', key('sk', name), REPLICA, -1) <= 0 then redis.call('HDEL', key('sk', name), REPLICA) end
redis.call('HSET', key('s', name), 'exp', arg(2))
redis.call('ZADD', P .. 'expiry', arg(2), name)
return 1
