-- farm() -> {{requirement set id, queued}, ...}, {{bot, session, offer id, capacity,
-- healthy, {{first operation, hash, size, function, instance, assigned at}, ...}}, ...}
local queued = {}
for _, req in ipairs(redis.call('SMEMBERS', P .. 'queues')) do
  queued[#queued + 1] = {req, redis.call('ZCARD', key('q', req))}
end
local workers = {}
for _, offer in ipairs(redis.call('HKEYS', P .. 'offer')) do
  for _, name in ipairs(redis.call('SMEMBERS', key('live', offer))) do
    local s = redis.call('HMGET', key('s', name), 'bot', 'cap', 'healthy')
    if s[1] then
      local running = {}
      for _, lid in ipairs(redis.call('ZRANGE', key('sl', name), 0, -1)) do
        local l = redis.call('HMGET', key('l', lid), 'exec', 'at')
        local e = redis.call('HMGET', key('e', l[1]), 'hash', 'size', 'fn', 'inst')
        local op = redis.call('SRANDMEMBER', key('eo', l[1])) or ''
        running[#running + 1] = {op, e[1], e[2], e[3], e[4], l[2]}
      end
      workers[#workers + 1] = {s[1], name, offer, s[2], s[3], running}
    end
  end
end
return {queued, workers}
