-- claim(name, now) -> session_view | false: the best queued executions it can run,
-- by (priority, arrival), up to its free capacity, if it is healthy
local name = arg(1)
local f = redis.call('HMGET', key('s', name), 'healthy', 'offer')
if not f[1] then return false end
if f[1] == '1' then
  while free_capacity(name) > 0 do
    local eid = pop_best(f[2])
    if not eid then break end
    assign(eid, name, arg(2))
  end
end
return session_view(name)
