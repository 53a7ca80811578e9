-- place(execution id, session, now, own) -> 1 | 0 (locality): give a queued execution to the
-- session Python chose if that one can still take it, else to the bot waiting longest;
-- 0 if it is not queued any more, or no bot could take it (it stays queued). own = '1':
-- the chosen session holds it already (locality.own_work: no progress for its waits).
local eid, name, now = arg(1), arg(2), arg(3)
if arg(4) == '1' then locality.own[eid] = name end
local f = redis.call('HMGET', key('e', eid), 'stage', 'req')
if not f[1] or tonumber(f[1]) ~= QUEUED then return 0 end
if redis.call('HGET', key('s', name), 'healthy') ~= '1' or free_capacity(name) <= 0 then
  name = first_idle(f[2])
end
if not name then return 0 end
discard(eid)
assign(eid, name, now)
return 1
