-- add_matches(requirement set id, offer id, ...): the offer satisfies the set
local i = 1
while arg(i) do
  redis.call('SADD', key('match', arg(i)), arg(i + 1))
  redis.call('SADD', key('offreq', arg(i + 1)), arg(i))
  i = i + 2
end
return 1
