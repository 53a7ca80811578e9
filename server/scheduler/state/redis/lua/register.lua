-- register(kind 'req'|'offer', id, json) -> every entry of the other kind ({id, json, ...})
-- Written before it reads, so of a requirement set and an offer registered at once on
-- two replicas, at least one sees the other and records their match.
redis.call('HSETNX', P .. arg(1), arg(2), arg(3))
if arg(1) == 'req' then return redis.call('HGETALL', P .. 'offer') end
return redis.call('HGETALL', P .. 'req')
