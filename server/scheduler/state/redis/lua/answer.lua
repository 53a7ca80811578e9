-- answer(name) -> false | {registration, {{lease id, cancelled, instance, hash, size, function,
-- action, stdout write name, stderr write name}, ...}}; cancellations are now told
local name = arg(1)
local reg = redis.call('HGET', key('s', name), 'reg')
if not reg then return false end
local leases = {}
for _, lid in ipairs(redis.call('ZRANGE', key('sl', name), 0, -1)) do
  local l = redis.call('HMGET', key('l', lid), 'exec', 'ow', 'ew')
  local e = redis.call('HMGET', key('e', l[1]), 'inst', 'hash', 'size', 'fn', 'act')
  leases[#leases + 1] = {lid, '0', e[1], e[2], e[3], e[4], e[5], l[2], l[3]}
end
local sc = key('sc', name)
local cancelled = redis.call('HGETALL', sc)
for j = 1, #cancelled, 2 do
  local lid = cancelled[j]
  local v = redis.call('HMGET', key('cv', lid), 'inst', 'hash', 'size', 'fn', 'act', 'ow', 'ew')
  leases[#leases + 1] = {lid, '1', v[1], v[2], v[3], v[4], v[5], v[6], v[7]}
  redis.call('HSET', sc, lid, 1)
end
return {reg, leases}
