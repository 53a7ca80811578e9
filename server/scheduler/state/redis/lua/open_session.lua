-- open_session(name, bot id, registration, offer id, capacity, healthy '1'|'0', expires_at
--              [locality: hold_when_busy '1'|'0', its summary as report takes it])
-- -> 1 | (locality) its summary's version
local name, bot, offer, exp = arg(1), arg(2), arg(4), arg(7)
redis.call('HSET', key('s', name), 'bot', bot, 'reg', arg(3), 'offer', offer, 'cap', arg(5), 'healthy', arg(6),
  'hold', '', 'exp', exp)
redis.call('HSET', P .. 'bots', bot, name)
redis.call('SADD', key('live', offer), name)
redis.call('ZADD', P .. 'expiry', exp, name)
if LOCALITY then
  redis.call('HSET', key('s', name), 'hwb', arg(8))
  return locality.take_summary(name, 9)
end
return 1
