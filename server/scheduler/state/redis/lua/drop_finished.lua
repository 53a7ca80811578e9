-- drop_finished(now, cutoff, limit) -> 1 if there may be more to drop
-- Operations finished at or before cutoff, executions no operation names any more,
-- and log streams past their drop time.
local now, cutoff, limit = arg(1), arg(2), tonumber(arg(3))
local names = redis.call('ZRANGEBYSCORE', P .. 'finished', '-inf', cutoff, 'LIMIT', 0, limit)
for _, name in ipairs(names) do
  local eid = redis.call('HGET', key('o', name), 'exec')
  redis.call('DEL', key('o', name))
  redis.call('ZREM', P .. 'ops', name)
  redis.call('ZREM', P .. 'finished', name)
  if eid then redis.call('SREM', key('eo', eid), name) end
end
local execs = redis.call('ZRANGEBYSCORE', P .. 'edrop', '-inf', cutoff, 'LIMIT', 0, limit)
for _, eid in ipairs(execs) do
  if redis.call('SCARD', key('eo', eid)) == 0 then
    redis.call('DEL', key('e', eid), key('eh', eid), key('ef', eid), key('eo', eid))
    redis.call('ZREM', P .. 'edrop', eid)
  end
end
local streams = redis.call('ZRANGEBYSCORE', P .. 'ldrop', '-inf', now, 'LIMIT', 0, limit)
for _, name in ipairs(streams) do
  local write = redis.call('HGET', key('lm', name), 'w')
  if write then redis.call('DEL', key('lw', write)) end
  redis.call('DEL', key('lm', name), key('ld', name))
  redis.call('ZREM', P .. 'ldrop', name)
  redis.call('PUBLISH', CHANNEL, 'l:' .. name)
end
if #names == limit or #streams == limit then return 1 end
return 0
