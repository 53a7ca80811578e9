-- watch_open(name, replay '1'|'0') -> {execution id, first history index} | false
local f = redis.call('HMGET', key('o', arg(1)), 'exec', 'first')
if not f[1] then return false end
if arg(2) == '1' then return {f[1], f[2]} end
return {f[1], tostring(redis.call('LLEN', key('eh', f[1])) - 1)}
