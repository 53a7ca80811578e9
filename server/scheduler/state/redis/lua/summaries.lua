-- summaries(name, ...) -> {{summary version, filter}, ...} (locality): what each bot
-- last said it holds, for a replica that has not seen that version yet.
local out = {}
for i = 1, #ARGV - A do
  local f = redis.call('HMGET', key('s', arg(i)), 'sv', 'sum')
  out[i] = {f[1] or '', f[2] or ''}
end
return out
