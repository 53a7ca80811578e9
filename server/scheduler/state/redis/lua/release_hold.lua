-- release_hold(name, token): the held call named by token stopped waiting (unless a newer call holds)
local s = key('s', arg(1))
if redis.call('HGET', s, 'hold') == arg(2) then
  redis.call('HSET', s, 'hold', '')
  set_busy(arg(1))
end
return 1
