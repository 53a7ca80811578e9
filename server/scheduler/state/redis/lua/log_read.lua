-- log_read(name, position, most bytes, now) -> false (unknown or dropped)
-- | {committed, base, finished, bytes from position (none if position is outside)}
local name, position, most, now = arg(1), tonumber(arg(2)), tonumber(arg(3)), tonumber(arg(4))
local meta = key('lm', name)
local f = redis.call('HMGET', meta, 'c', 'b', 'fin')
if not f[1] then return false end
local drop = redis.call('ZSCORE', P .. 'ldrop', name)
if drop and tonumber(drop) <= now then return false end -- due to be dropped: as good as gone
local committed, base = tonumber(f[1]), tonumber(f[2])
if position < base or position >= committed then return {f[1], f[2], f[3], ''} end
local data_stream = key('ld', name)
local parts, total = {}, 0
local entry = redis.call('XREVRANGE', data_stream, tostring(position + 1) .. '-0', '-', 'COUNT', 1)[1]
while entry and total < most do
  local start = tonumber(string.match(entry[1], '^(%d+)')) - 1
  local data = entry[2][2]
  local from = math.max(position + total - start, 0) + 1
  local piece = string.sub(data, from, from + most - total - 1)
  parts[#parts + 1] = piece
  total = total + #piece
  entry = redis.call('XRANGE', data_stream, '(' .. entry[1], '+', 'COUNT', 1)[1]
end
return {f[1], f[2], f[3], table.concat(parts)}
