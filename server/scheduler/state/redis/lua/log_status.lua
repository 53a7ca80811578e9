-- log_status(write name, now) -> false (unknown or dropped) | {committed, finished}
local name = redis.call('GET', key('lw', arg(1)))
if not name then return false end
local drop = redis.call('ZSCORE', P .. 'ldrop', name)
if drop and tonumber(drop) <= tonumber(arg(2)) then return false end
local f = redis.call('HMGET', key('lm', name), 'c', 'fin')
if not f[1] then return false end
return {f[1], f[2]}
