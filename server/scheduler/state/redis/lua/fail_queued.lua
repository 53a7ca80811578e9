-- fail_queued(requirement set id, response, now): finish every queued execution of it
for _, member in ipairs(redis.call('ZRANGE', key('q', arg(1)), 0, -1)) do
  stop(string.sub(member, 17), arg(2), arg(3))
end
return 1
