-- running_leases() -> {{lease id, execution id, instance, hash, size, function, action,
--                      requirement set, do_not_cache, timeout, bot id, assigned at}, ...}
-- Every lease a bot holds now: the sessions' lease sets (completed, cancelled and lost
-- leases have left them).
local out = {}
for _, name in ipairs(redis.call('ZRANGE', P .. 'expiry', 0, -1)) do
  local bot = redis.call('HGET', key('s', name), 'bot')
  for _, lid in ipairs(redis.call('ZRANGE', key('sl', name), 0, -1)) do
    local l = redis.call('HMGET', key('l', lid), 'exec', 'at')
    if l[1] then
      local e = redis.call('HMGET', key('e', l[1]), 'inst', 'hash', 'size', 'fn', 'act', 'req', 'dnc', 'tmo')
      out[#out + 1] = {lid, l[1], e[1], e[2], e[3], e[4], e[5], e[6], e[7], e[8] or '', bot or '', l[2]}
    end
  end
end
return out
