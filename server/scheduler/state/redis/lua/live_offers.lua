-- live_offers() -> ids of the offers of connected sessions
local out = {}
for _, offer in ipairs(redis.call('HKEYS', P .. 'offer')) do
  if redis.call('SCARD', key('live', offer)) > 0 then out[#out + 1] = offer end
end
return out
