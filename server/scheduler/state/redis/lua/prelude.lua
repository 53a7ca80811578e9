-- The steps every transition of the Redis scheduler state is made of; prepended to
-- each script, so a transition is one script: atomic, and never half-applied.
-- The keys and what they hold: server/scheduler/state/redis/README.md.
--
-- ARGV[1] the key prefix   ARGV[2] a random nonce new ids are made from
-- ARGV[3] '1' if log streams are kept   ARGV[4] seconds finished log streams are kept
-- ARGV[5] ms a finished operation's keys live at most (a backstop for drop_finished)
-- ARGV[6] this replica's id (its calls count while its heartbeat key lives)
-- The script's own arguments start at ARGV[7].
-- LOCALITY (true with dispatch = "locality") and the Dispatch bounds the steps of
-- lua/locality.lua read (WINDOW, MAX_IDLE, EXPECTED) come before this prelude, as
-- constants of the script's text (scripts.py): fifo's scripts never test them at run time.
local P = ARGV[1]
local NONCE = ARGV[2]
local LOGS = ARGV[3] == '1'
local STREAM_RETENTION = tonumber(ARGV[4])
local RECORD_TTL_MS = ARGV[5]
local REPLICA = ARGV[6]
local A = 6 -- ARGV[A + i] is the script's i-th argument
local QUEUED, EXECUTING, COMPLETED = 2, 3, 4
local CHANNEL = P .. 'wake'

local function key(kind, id) return P .. kind .. ':' .. id end
local locality = {} -- the steps of lua/locality.lua (appended after this prelude)
local function arg(i) return ARGV[A + i] end

local function new_id()
  return string.sub(redis.sha1hex(NONCE .. ':' .. redis.call('INCR', P .. 'ids')), 1, 32)
end

-- Wake-ups: every replica listens on CHANNEL and resolves its own waiters. A session's
-- wake-ups are numbered, so a held call ends only for one that came after it held.
local function wake_session(name)
  redis.call('PUBLISH', CHANNEL, 's:' .. redis.call('HINCRBY', key('s', name), 'wk', 1) .. ':' .. name)
end
local function notify_execution(eid) redis.call('PUBLISH', CHANNEL, 'e:' .. eid) end

-- -- the worker index -----------------------------------------------------------

local function replica_alive(rid) return redis.call('EXISTS', key('replica', rid)) == 1 end

local function calls_in_progress(name)
  local fields = redis.call('HGETALL', key('sk', name))
  local n = 0
  for i = 1, #fields, 2 do
    if tonumber(fields[i + 1]) > 0 and replica_alive(fields[i]) then n = n + tonumber(fields[i + 1]) end
  end
  return n
end

local function can_run(req)
  for _, offer in ipairs(redis.call('SMEMBERS', key('match', req))) do
    if redis.call('SCARD', key('live', offer)) > 0 then return true end
  end
  return false
end

-- false if a connected worker can run req, else when one last could (the start if never).
local function unserved_since(req, started)
  if can_run(req) then return false end
  redis.call('SET', P .. 'started', started, 'NX')
  return redis.call('HGET', P .. 'lastseen', req) or redis.call('GET', P .. 'started')
end

local function offer_of(name) return redis.call('HGET', key('s', name), 'offer') end

local function free_capacity(name)
  return tonumber(redis.call('HGET', key('s', name), 'cap')) - redis.call('ZCARD', key('sl', name))
end

local function set_busy(name) redis.call('ZREM', key('idle', offer_of(name)), name) end

-- The session waiting longest in a held call whose offer satisfies req.
local function first_idle(req)
  local best, best_score
  for _, offer in ipairs(redis.call('SMEMBERS', key('match', req))) do
    local head = redis.call('ZRANGE', key('idle', offer), 0, 0, 'WITHSCORES')
    if head[1] and (best == nil or tonumber(head[2]) < best_score) then
      best, best_score = head[1], tonumber(head[2])
    end
  end
  return best
end

-- -- queues: a sorted set per requirement set, by priority then arrival ---------

local function push(eid)
  local e = key('e', eid)
  local f = redis.call('HMGET', e, 'req', 'prio', 'seq')
  local member = string.format('%016d', tonumber(f[3])) .. eid
  redis.call('ZADD', key('q', f[1]), f[2], member)
  redis.call('HSET', e, 'qm', member)
  redis.call('SADD', P .. 'queues', f[1])
  redis.call('INCR', P .. 'queued')
  if HOLDER_WAIT then redis.call('INCR', P .. 'qv') end
end

local function unqueued(req)
  redis.call('DECR', P .. 'queued')
  if redis.call('ZCARD', key('q', req)) == 0 then redis.call('SREM', P .. 'queues', req) end
end

local function discard(eid)
  local f = redis.call('HMGET', key('e', eid), 'req', 'qm')
  if f[2] and redis.call('ZREM', key('q', f[1]), f[2]) == 1 then unqueued(f[1]) end
end

-- The best queued execution among the requirement sets the offer satisfies: its
-- requirement set and queue member (the execution id from the 17th character), or nil.
local function best_queued(offer)
  local best_req, best_member, best_score
  for _, req in ipairs(redis.call('SINTER', key('offreq', offer), P .. 'queues')) do
    local head = redis.call('ZRANGE', key('q', req), 0, 0, 'WITHSCORES')
    if head[1] then
      local score = tonumber(head[2])
      if best_score == nil or score < best_score or (score == best_score and head[1] < best_member) then
        best_req, best_member, best_score = req, head[1], score
      end
    end
  end
  return best_req, best_member
end

-- Take the best queued execution among the requirement sets the offer satisfies.
local function pop_best(offer)
  local best_req, best_member = best_queued(offer)
  if not best_req then return nil end
  redis.call('ZREM', key('q', best_req), best_member)
  unqueued(best_req)
  return string.sub(best_member, 17)
end

-- -- executions ------------------------------------------------------------------

local function record(eid, stage)
  local e = key('e', eid)
  local f = redis.call('HMGET', e, 'out', 'err')
  redis.call('HSET', e, 'stage', stage)
  redis.call('RPUSH', key('eh', eid), stage .. '\t' .. (f[1] or '') .. '\t' .. (f[2] or ''))
  notify_execution(eid)
end

local function create_log(parent, now)
  local name = 'logstreams/' .. new_id()
  if parent ~= '' then name = parent .. '/' .. name end
  local write = name .. '/write/' .. new_id()
  redis.call('HSET', key('lm', name), 'w', write, 'c', 0, 'b', 0, 'fin', 0, 'act', now)
  redis.call('SET', key('lw', write), name)
  return name, write
end

local function finish_log(write, now)
  if not write or write == '' then return end
  local name = redis.call('GET', key('lw', write))
  if not name then return end
  if redis.call('HGET', key('lm', name), 'fin') == '0' then
    redis.call('HSET', key('lm', name), 'fin', 1)
    redis.call('PUBLISH', CHANNEL, 'l:' .. name)
  end
  redis.call('ZADD', P .. 'ldrop', 'NX', tonumber(now) + STREAM_RETENTION, name)
end

local function finish_streams(lid, now)
  if LOGS then
    local f = redis.call('HMGET', key('l', lid), 'ow', 'ew')
    finish_log(f[1], now)
    finish_log(f[2], now)
  end
end

local function assign(eid, name, now)
  local lid = new_id()
  local e = key('e', eid)
  local out, err, ow, ew = '', '', '', ''
  if LOGS then
    local inst = redis.call('HGET', e, 'inst')
    local parent = 'executions/' .. eid
    if inst ~= '' then parent = inst .. '/' .. parent end
    out, ow = create_log(parent .. '/stdout', now)
    err, ew = create_log(parent .. '/stderr', now)
  end
  redis.call('HSET', key('l', lid), 'exec', eid, 'sess', name, 'at', now, 'ow', ow, 'ew', ew)
  redis.call('HSET', e, 'out', out, 'err', err, 'lease', lid)
  redis.call('HDEL', e, 'pmeta')
  redis.call('ZADD', key('sl', name), redis.call('INCR', P .. 'lseq'), lid)
  record(eid, EXECUTING)
  if LOCALITY then locality.assigned(eid, name) end
  if free_capacity(name) <= 0 then set_busy(name) end
  wake_session(name)
end

-- Queue an execution, or give it to the bot waiting longest. With LOCALITY, true if
-- it was queued while bots could take it: Python chooses one (redis/placement.py).
local function enqueue(eid, now)
  if LOCALITY then return locality.enqueue(eid, now) end
  local name = first_idle(redis.call('HGET', key('e', eid), 'req'))
  if name then assign(eid, name, now) else push(eid) end
  return false
end

-- What the policy is told of an execution a worker lost: {id, requeued '1'|'0',
-- instance, hash, size, function, action, requirement set, do_not_cache, {notes}, timeout}.
local function lost(eid, requeued)
  local f = redis.call('HMGET', key('e', eid), 'inst', 'hash', 'size', 'fn', 'act', 'req', 'dnc', 'tmo')
  return {eid, requeued and '1' or '0', f[1], f[2], f[3], f[4], f[5], f[6], f[7],
    redis.call('LRANGE', key('ef', eid), 0, -1), f[8] or ''}
end

-- Queue again an execution whose lease ended without a result, budget permitting;
-- past the budget it is left leased to nobody and queued nowhere for the policy.
local function requeue(eid, note, budget, now)
  local e = key('e', eid)
  redis.call('HSET', e, 'lease', '')
  redis.call('HDEL', P .. 'awaiting', eid)
  if redis.call('RPUSH', key('ef', eid), note) > tonumber(budget) then return lost(eid, false) end
  redis.call('HSET', e, 'out', '', 'err', '')
  record(eid, QUEUED)
  enqueue(eid, now)
  return lost(eid, true)
end

local function awaits_result(eid)
  local f = redis.call('HMGET', key('e', eid), 'stage', 'lease')
  return tonumber(f[1]) == EXECUTING and f[2] == ''
end

local function expire_record(k) redis.call('PEXPIRE', k, RECORD_TTL_MS) end

local function finish(eid, response, now)
  local e = key('e', eid)
  local dedup = redis.call('HGET', e, 'dedup')
  if dedup and dedup ~= '' then
    if redis.call('HGET', P .. 'inflight', dedup) == eid then redis.call('HDEL', P .. 'inflight', dedup) end
  end
  redis.call('HSET', e, 'lease', '', 'resp', response, 'fat', now, 'dedup', '')
  redis.call('HDEL', P .. 'awaiting', eid)
  for _, name in ipairs(redis.call('SMEMBERS', key('eo', eid))) do
    local o = key('o', name)
    if redis.call('EXISTS', o) == 1 and not redis.call('HGET', o, 'fat') then
      redis.call('HSET', o, 'fat', now)
      redis.call('ZADD', P .. 'finished', now, name)
      expire_record(o)
    end
  end
  redis.call('ZADD', P .. 'edrop', now, eid)
  record(eid, COMPLETED)
  for _, kind in ipairs({'e', 'eh', 'ef', 'eo'}) do expire_record(key(kind, eid)) end
end

-- End a lease early: the bot is told at its next answer.
local function cancel_lease(lid, now)
  local f = redis.call('HMGET', key('l', lid), 'exec', 'sess', 'ow', 'ew')
  local e = redis.call('HMGET', key('e', f[1]), 'inst', 'hash', 'size', 'fn', 'act')
  redis.call('ZREM', key('sl', f[2]), lid)
  redis.call('HSET', key('cv', lid), 'inst', e[1], 'hash', e[2], 'size', e[3], 'fn', e[4], 'act', e[5],
    'ow', f[3], 'ew', f[4])
  redis.call('HSET', key('sc', f[2]), lid, 0)
  finish_streams(lid, now)
  redis.call('DEL', key('l', lid))
  wake_session(f[2])
end

-- End an execution early (cancellation, grace expired); its bot is told.
local function stop(eid, response, now)
  local f = redis.call('HMGET', key('e', eid), 'stage', 'lease')
  if not f[1] or tonumber(f[1]) == COMPLETED then return end
  if tonumber(f[1]) == QUEUED then discard(eid) end
  if f[2] and f[2] ~= '' then cancel_lease(f[2], now) end
  finish(eid, response, now)
end

-- -- what crosses to Python ----------------------------------------------------------

-- An operation's state: {name, instance, hash, size, function, stage, done, response,
-- stdout, stderr, partial metadata, owner}; at a history event if given. false if gone.
local function op_state(name, eid, event)
  local e = redis.call('HMGET', key('e', eid), 'inst', 'hash', 'size', 'fn', 'stage', 'resp', 'out', 'err', 'pmeta')
  if not e[2] then return false end
  local o = redis.call('HMGET', key('o', name), 'cancel', 'own')
  local cancel, owner = o[1], o[2] or ''
  if cancel then
    return {name, e[1], e[2], e[3], e[4], tostring(COMPLETED), '1', cancel, e[7] or '', e[8] or '', '', owner}
  end
  local stage, out, err = e[5], e[7] or '', e[8] or ''
  if event then
    local first = string.find(event, '\t', 1, true)
    local second = string.find(event, '\t', first + 1, true)
    stage, out, err = string.sub(event, 1, first - 1), string.sub(event, first + 1, second - 1), string.sub(event, second + 1)
  end
  local done = tonumber(stage) == COMPLETED
  local pmeta = ''
  if tonumber(stage) == EXECUTING then pmeta = e[9] or '' end
  return {name, e[1], e[2], e[3], e[4], stage, done and '1' or '0', done and (e[6] or '') or '', out, err, pmeta, owner}
end

-- A bot's answer (answer.lua): false | {registration, {{lease id, cancelled, instance, hash,
-- size, function, action, stdout write name, stderr write name}, ...}}; cancellations are
-- now told.
local function answer_of(name)
  local reg = redis.call('HGET', key('s', name), 'reg')
  if not reg then return false end
  local leases = {}
  for _, lid in ipairs(redis.call('ZRANGE', key('sl', name), 0, -1)) do
    local l = redis.call('HMGET', key('l', lid), 'exec', 'ow', 'ew')
    local e = redis.call('HMGET', key('e', l[1]), 'inst', 'hash', 'size', 'fn', 'act')
    leases[#leases + 1] = {lid, '0', e[1], e[2], e[3], e[4], e[5], l[2], l[3]}
  end
  local sc = key('sc', name)
  local cancelled = redis.call('HGETALL', sc)
  for j = 1, #cancelled, 2 do
    local lid = cancelled[j]
    local v = redis.call('HMGET', key('cv', lid), 'inst', 'hash', 'size', 'fn', 'act', 'ow', 'ew')
    leases[#leases + 1] = {lid, '1', v[1], v[2], v[3], v[4], v[5], v[6], v[7]}
    redis.call('HSET', sc, lid, 1)
  end
  return {reg, leases}
end

local function session_view(name)
  local f = redis.call('HMGET', key('s', name), 'reg', 'healthy', 'hold')
  if not f[1] then return false end
  local untold = '0'
  for _, told in ipairs(redis.call('HVALS', key('sc', name))) do
    if told == '0' then untold = '1' break end
  end
  local holding = '0'
  if f[3] and f[3] ~= '' then holding = '1' end
  return {name, f[1], f[2], redis.call('ZRANGE', key('sl', name), 0, -1), untold, holding}
end
