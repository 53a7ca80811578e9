-- expired_sessions(now) -> {session_view, ...}: no call in progress (on a live replica),
-- expiry before now
local out = {}
for _, name in ipairs(redis.call('ZRANGEBYSCORE', P .. 'expiry', '-inf', '(' .. arg(1))) do
  if calls_in_progress(name) == 0 then
    local view = session_view(name)
    if view then out[#out + 1] = view else redis.call('ZREM', P .. 'expiry', name) end
  end
end
return out
