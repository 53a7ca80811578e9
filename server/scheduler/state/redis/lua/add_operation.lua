-- add_operation(name, instance, hash, size, function, action, req, do_not_cache,
--               priority, dedup key or '', now, worker_grace, started, owner, timeout or '',
--               [locality: input sketch])
-- -> {'exists'} | {'unserved', since} | {'ok', execution id, op_state[, locality: queued while
-- bots could take it: what place_bots returns, for Python to choose (then place)]}
local name = arg(1)
local o = key('o', name)
if redis.call('EXISTS', o) == 1 then return {'exists'} end
local priority, dedup, now = tonumber(arg(9)), arg(10), arg(11)
local eid = false
if dedup ~= '' then eid = redis.call('HGET', P .. 'inflight', dedup) end
local first, deferred
if eid then
  local e = key('e', eid)
  local f = redis.call('HMGET', e, 'prio', 'stage')
  if priority < tonumber(f[1]) and tonumber(f[2]) == QUEUED then
    discard(eid)
    redis.call('HSET', e, 'prio', priority)
    push(eid)
  end
  first = redis.call('LLEN', key('eh', eid)) - 1
else
  local since = unserved_since(arg(7), arg(13))
  if since and tonumber(now) - tonumber(since) > tonumber(arg(12)) then return {'unserved', since} end
  eid = new_id()
  redis.call('HSET', key('e', eid), 'inst', arg(2), 'hash', arg(3), 'size', arg(4), 'fn', arg(5), 'act', arg(6),
    'req', arg(7), 'dnc', arg(8), 'prio', priority, 'seq', redis.call('INCR', P .. 'seq'), 'qat', now,
    'stage', QUEUED, 'lease', '', 'dedup', dedup, 'tmo', arg(15))
  if dedup ~= '' then redis.call('HSET', P .. 'inflight', dedup, eid) end
  if LOCALITY and arg(16) and arg(16) ~= '' then redis.call('HSET', key('e', eid), 'sk', arg(16)) end
  first = 0
  record(eid, QUEUED)
  deferred = enqueue(eid, now)
end
local seq = redis.call('INCR', P .. 'seq')
redis.call('SADD', key('eo', eid), name)
redis.call('HSET', o, 'exec', eid, 'seq', seq, 'first', first, 'own', arg(14))
redis.call('ZADD', P .. 'ops', seq, name)
if deferred then return {'ok', eid, op_state(name, eid), locality.bots(eid, now)} end
return {'ok', eid, op_state(name, eid)}
