-- log_append(write name, offset, data, finish '1'|'0', now, max bytes, retention)
-- -> {'unknown'} | {'offset', committed} | {'finished'} | {'ok', committed}
-- Each append is one stream entry whose id is its start offset + 1, so a reader finds
-- the entry holding any offset with one XREVRANGE. Only the newest max bytes are
-- kept: the base moves up, entries wholly below it are deleted.
local name = redis.call('GET', key('lw', arg(1)))
if not name then return {'unknown'} end
local meta = key('lm', name)
local f = redis.call('HMGET', meta, 'c', 'b', 'fin')
local committed, base = tonumber(f[1]), tonumber(f[2])
local offset, data, finish, now = tonumber(arg(2)), arg(3), arg(4) == '1', arg(5)
if offset ~= committed then return {'offset', committed} end
if f[3] == '1' and (data ~= '' or not finish) then return {'finished'} end
local data_stream = key('ld', name)
if data ~= '' then
  redis.call('XADD', data_stream, tostring(committed + 1) .. '-0', 'd', data)
  committed = committed + #data
  base = math.max(base, committed - tonumber(arg(6)))
  redis.call('HSET', meta, 'c', committed, 'b', base, 'act', now)
  while true do
    local oldest = redis.call('XRANGE', data_stream, '-', '+', 'COUNT', 1)[1]
    if not oldest then break end
    local start = tonumber(string.match(oldest[1], '^(%d+)')) - 1
    if start + #oldest[2][2] > base then break end
    redis.call('XDEL', data_stream, oldest[1])
  end
end
if finish and f[3] ~= '1' then
  redis.call('HSET', meta, 'fin', 1)
  redis.call('ZADD', P .. 'ldrop', 'NX', tonumber(now) + tonumber(arg(7)), name)
end
redis.call('PUBLISH', CHANNEL, 'l:' .. name)
return {'ok', committed}
