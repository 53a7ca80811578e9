-- overdue_leases(now, default timeout, grace) -> {{lease id, execution id, instance, hash,
--   size, function, action, requirement set, do_not_cache, timeout, bot id, assigned at}, ...}
-- The leases bots hold (the sessions' lease sets: completed, cancelled and lost leases
-- have left them) that have run longer than their action's timeout (the default for an
-- action without one) plus the grace. Only those cross to Python: the server asks every tick.
local now, default, grace = tonumber(arg(1)), tonumber(arg(2)), tonumber(arg(3))
local out = {}
for _, name in ipairs(redis.call('ZRANGE', P .. 'expiry', 0, -1)) do
  for _, lid in ipairs(redis.call('ZRANGE', key('sl', name), 0, -1)) do
    local l = redis.call('HMGET', key('l', lid), 'exec', 'at')
    if l[1] then
      local timeout = redis.call('HGET', key('e', l[1]), 'tmo')
      timeout = (timeout and timeout ~= '') and tonumber(timeout) or default
      if now - tonumber(l[2]) > timeout + grace then
        local e = redis.call('HMGET', key('e', l[1]), 'inst', 'hash', 'size', 'fn', 'act', 'req', 'dnc', 'tmo')
        local bot = redis.call('HGET', key('s', name), 'bot')
        out[#out + 1] = {lid, l[1], e[1], e[2], e[3], e[4], e[5], e[6], e[7], e[8] or '', bot or '', l[2]}
      end
    end
  end
end
return out
