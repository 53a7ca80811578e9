-- close_session(name, note, retry budget, now, if_expired '1'|'0')
-- -> false (nothing closed) | {'closed', {lost, ...}} (one per lease it held)
local name, now = arg(1), arg(4)
local s = key('s', name)
local f = redis.call('HMGET', s, 'bot', 'offer')
if not f[1] then return false end
if arg(5) == '1' then
  local exp = redis.call('ZSCORE', P .. 'expiry', name)
  if not exp or tonumber(exp) >= tonumber(now) or calls_in_progress(name) > 0 then return false end
end
if redis.call('HGET', P .. 'bots', f[1]) == name then redis.call('HDEL', P .. 'bots', f[1]) end
redis.call('SREM', key('live', f[2]), name)
redis.call('ZREM', key('idle', f[2]), name)
if LOCALITY then locality.closed(name, f[2]) end -- before its leases are queued again: not a candidate for them
redis.call('ZREM', P .. 'expiry', name)
for _, req in ipairs(redis.call('SMEMBERS', key('offreq', f[2]))) do
  if not can_run(req) then redis.call('HSET', P .. 'lastseen', req, now) end
end
local out = {}
for _, lid in ipairs(redis.call('ZRANGE', key('sl', name), 0, -1)) do
  local eid = redis.call('HGET', key('l', lid), 'exec')
  finish_streams(lid, now)
  redis.call('DEL', key('l', lid))
  out[#out + 1] = requeue(eid, arg(2), arg(3), now)
end
for _, lid in ipairs(redis.call('HKEYS', key('sc', name))) do redis.call('DEL', key('cv', lid)) end
wake_session(name)
redis.call('DEL', s, key('sl', name), key('sc', name), key('sk', name))
return {'closed', out}
