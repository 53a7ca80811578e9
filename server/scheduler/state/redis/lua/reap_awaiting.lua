-- reap_awaiting(note, retry budget, now) -> {lost, ...}
-- Executions whose completed lease was being stored by a replica that is gone: queue
-- them again (the budget counts it), or return them past the budget.
local out = {}
local fields = redis.call('HGETALL', P .. 'awaiting')
for j = 1, #fields, 2 do
  if not replica_alive(fields[j + 1]) then
    local eid = fields[j]
    if awaits_result(eid) then
      out[#out + 1] = requeue(eid, arg(1), arg(2), arg(3))
    else
      redis.call('HDEL', P .. 'awaiting', eid)
    end
  end
end
return out
