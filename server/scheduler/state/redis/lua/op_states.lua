-- op_states(name, execution id or '', ...) -> the states (false for unknown), in order
local out = {}
local i = 1
while arg(i) do
  local name, eid = arg(i), arg(i + 1)
  if eid == '' then eid = redis.call('HGET', key('o', name), 'exec') end
  out[#out + 1] = eid and op_state(name, eid) or false
  i = i + 2
end
return out
