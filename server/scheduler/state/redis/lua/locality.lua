-- Locality dispatch's steps in Redis (dispatch = "locality"; appended after the prelude).
-- Scripts gather what the rules of server/scheduler/locality.py need; Python applies
-- them and chooses (redis/placement.py); a second script applies the choice if it
-- still holds, else falls back to fifo's choice, so an execution is never lost or
-- given twice. Bounded whatever the farm's size: at most MAX_IDLE bots, or WINDOW +
-- free slots - 1 queued executions, per decision.
--
-- A session's hash keeps what its bot last said (`sum` its cache filter, `sv` that
-- filter's version, `cpu`, `mem`) and `hwb` (it holds calls while busy); `P:sx:NAME`
-- the record keys of the actions given to it since (locality.EXPECTED of them);
-- `P:ret:OFFER` the sessions back from a call with a slot free, by when. An
-- execution's hash keeps its input sketch (`sk`) and how often it was passed over (`pass`).
--
-- The wait for the holder (HOLDER_WAIT: locality_wait_for_holder): an execution that
-- waits for the bot holding most of it keeps `aw` (that session), `am` (its `gv` when
-- the wait began, plus the extra progress a big action waits for), `ad` (the wait's deadline, HOLDER_WAIT_MAX later) and `wo` ('1' once
-- the wait is over); `P:aw:NAME` the executions waiting for a session, `P:hw` those
-- waiting, by deadline. A session's `gv` counts the actions given to it that did not
-- wait for it (its progress); `cq` is `P:qv` (bumped by each push and each wait's end)
-- at its last claim. The wait ends in `given` (the holder moved on,
-- locality.holder_moved_on) or in holder_waits (the deadline; any replica's tick).

-- The 8-byte keys (h1, h2) of a sketch's records: locality.record_keys, as bytes.
local function record_keys(sketch)
  local out = {}
  for i = 9, #sketch - 15, 16 do out[#out + 1] = string.sub(sketch, i, i + 7) end
  return out
end

local function has_summary(name) return redis.call('HSTRLEN', key('s', name), 'sum') > 0 end
locality.has_summary = has_summary

-- The input bytes of a sketched action (its first 8 bytes, big-endian; 0 for none).
local function sketch_total(sketch)
  local total = 0
  for i = 1, math.min(8, #sketch) do total = total * 256 + string.byte(sketch, i) end
  return total
end

-- The unsigned big-endian integer of n bytes of s from at (a sketch's fields).
local function unsigned(s, at, n)
  local value = 0
  for i = at, at + n - 1 do value = value * 256 + string.byte(s, i) end
  return value
end

-- Whether the session's filter holds the record (h1, h2): every probe's bit set, bit p
-- being byte p >> 3's bit 7 - (p & 7) after the 2 header bytes (cas/digest_filter.py,
-- whose layout is GETBIT's). Exact in doubles: h1 + j * h2 < 2^37.
local function filter_holds(summary, bits, h1, h2)
  for j = 0, string.byte(summary, 2) - 1 do
    local p = (h1 + j * h2) % bits
    if math.floor(string.byte(summary, 3 + math.floor(p / 8)) / 2 ^ (7 - p % 8)) % 2 == 0 then return false end
  end
  return true
end

-- locality.own_work for an execution a script gives to a session on its own (a claim's
-- fill by priority and arrival, an urgent action, the one bot waiting): whether the
-- session holds all but MIN_GAIN of it (locality.held_bytes: the sampled files in its
-- filter or expected, scaled to the total; to within rounding of a double).
local function holds_already(name, sketch)
  local total = sketch_total(sketch)
  if total < MIN_HOME or not has_summary(name) then return false end
  local summary = redis.call('HGET', key('s', name), 'sum')
  local bits = (#summary - 2) * 8
  local keys = record_keys(sketch)
  local scores = redis.call('ZMSCORE', key('sx', name), unpack(keys))
  local sampled, held = 0, 0
  for i = 1, #keys do
    local at = 9 + (i - 1) * 16
    local size = unsigned(sketch, at + 8, 8)
    sampled = sampled + size
    if scores[i] or filter_holds(summary, bits, unsigned(sketch, at, 4), unsigned(sketch, at + 4, 4)) then
      held = held + size
    end
  end
  return sampled > 0 and total - math.floor(total * held / sampled) < MIN_GAIN
end

-- Whether an execution is urgent (locality.urgent: a priority better than the default):
-- placed as fifo places it, whoever holds what.
local function urgent(eid)
  return tonumber(redis.call('HGET', key('e', eid), 'prio') or 0) < URGENT_BELOW
end

-- -- the wait for the holder ---------------------------------------------------------

-- Whether the holder moved on since mark (its `gv` then): given as many actions as it has
-- slots (locality.holder_moved_on); a closed holder has.
local function holder_moved_on(holder, mark)
  local h = redis.call('HMGET', key('s', holder), 'gv', 'cap')
  if not h[2] then return true end
  return tonumber(h[1] or 0) - tonumber(mark) >= math.max(tonumber(h[2]), 1)
end

-- Whether a queued execution waits for a holder other than name, and its wait is not over,
-- from its fields aw, am, ad, wo, pass, prio (WAIT_FIELDS) as HMGET returns them.
local WAIT_FIELDS = {'aw', 'am', 'ad', 'wo', 'pass', 'prio'}
local function waiting_for_other(f, name, now)
  if not f[1] or f[1] == name or f[4] == '1' or tonumber(f[6] or 0) < URGENT_BELOW then return false end
  if tonumber(f[5] or 0) >= MAX_PASSES or tonumber(now) >= tonumber(f[3]) then return false end
  return not holder_moved_on(f[1], f[2])
end

function locality.waits_for_other(eid, name, now)
  return waiting_for_other(redis.call('HMGET', key('e', eid), unpack(WAIT_FIELDS)), name, now)
end

-- Python found a queued execution theirs to a bot that could take it: it waits for
-- holder, from now (unless it waits for it already, or its wait is over), for its slots'
-- worth of progress and extra more (locality.holder_wait_mark: a big action waits longer).
function locality.await_holder(eid, holder, now, extra)
  local e = key('e', eid)
  local f = redis.call('HMGET', e, 'stage', 'aw', 'wo')
  if not f[1] or tonumber(f[1]) ~= QUEUED or f[2] == holder or f[3] == '1' then return end
  local gv = redis.call('HMGET', key('s', holder), 'cap', 'gv')
  if not gv[1] then return end
  if f[2] then redis.call('SREM', key('aw', f[2]), eid) end
  local deadline = tonumber(now) + HOLDER_WAIT_MAX
  redis.call('HSET', e, 'aw', holder, 'am', tonumber(gv[2] or 0) + tonumber(extra or 0), 'ad', deadline)
  redis.call('SADD', key('aw', holder), eid)
  redis.call('ZADD', P .. 'hw', deadline, eid)
end

-- The wait is over: the next bot that asks takes it (claims see `wo`); bots in a call
-- between claim and hold claim again (`P:qv`).
local function wait_over(eid)
  local e = key('e', eid)
  local aw = redis.call('HGET', e, 'aw')
  if aw then redis.call('SREM', key('aw', aw), eid) end
  redis.call('HDEL', e, 'aw')
  redis.call('HSET', e, 'wo', '1')
  redis.call('INCR', P .. 'qv')
end

-- holder_waits' step: the waits past their deadline are over; the ones still queued are
-- returned for Python to place (place_bots, then place), and the next deadline.
function locality.waits_past(now, limit)
  local out = {}
  for _, eid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'hw', '-inf', now, 'LIMIT', 0, limit)) do
    redis.call('ZREM', P .. 'hw', eid)
    local stage = redis.call('HGET', key('e', eid), 'stage')
    if stage and tonumber(stage) == QUEUED then
      wait_over(eid)
      out[#out + 1] = eid
    end
  end
  local next_one = redis.call('ZRANGE', P .. 'hw', 0, 0, 'WITHSCORES')
  return {out, next_one[2] or false}
end

-- Executions this script gives to a session that holds them already (place's and
-- claim_chosen's arguments, from Python: locality.own_work): eid -> that session.
locality.own = {}

-- assign's step: an execution given to name waits no more; unless it waited for name
-- (its own backlog) or name holds it already (locality.own, Python's judgement; else,
-- while executions wait for name, holds_already), name made progress, which may end
-- the waits for it: each goes to a bot through the replica running this script (a 'w:'
-- wake-up, placement.py), if one waits.
local function given(eid, name)
  local e = key('e', eid)
  local f = redis.call('HMGET', e, 'aw', 'sk')
  local aw = f[1]
  if aw then
    redis.call('SREM', key('aw', aw), eid)
    redis.call('HDEL', e, 'aw', 'am', 'ad')
  end
  redis.call('HDEL', e, 'wo')
  redis.call('ZREM', P .. 'hw', eid)
  if aw == name or locality.own[eid] == name then return end
  local waiting = key('aw', name)
  local awaited = redis.call('SCARD', waiting) > 0
  if awaited and holds_already(name, f[2] or '') then return end
  redis.call('HINCRBY', key('s', name), 'gv', 1)
  if not awaited then return end
  for _, other in ipairs(redis.call('SMEMBERS', waiting)) do
    local f = redis.call('HMGET', key('e', other), 'stage', 'aw', 'am', 'req')
    if not f[1] or tonumber(f[1]) ~= QUEUED or f[2] ~= name then
      redis.call('SREM', waiting, other)
    elseif holder_moved_on(name, f[3]) then
      wait_over(other)
      if first_idle(f[4]) then redis.call('PUBLISH', CHANNEL, 'w:' .. REPLICA .. ':' .. other) end
    end
  end
end

-- Whether Python must judge where a new action goes though only one bot waits for it:
-- with the holder wait, a big action another connected bot may hold more of.
local function contested(req, sketch)
  if not HOLDER_WAIT or sketch_total(sketch) < MIN_HOME then return false end
  local n = 0
  for _, offer in ipairs(redis.call('SMEMBERS', key('match', req))) do
    n = n + redis.call('SCARD', key('live', offer))
    if n > 1 then return true end
  end
  return false
end

-- The sketch's record keys that the session expects (given to it since), concatenated.
local function expected_of(name, sketch)
  local keys = record_keys(sketch)
  if #keys == 0 then return '' end
  local scores = redis.call('ZMSCORE', key('sx', name), unpack(keys))
  local hits = {}
  for i = 1, #keys do
    if scores[i] then hits[#hits + 1] = keys[i] end
  end
  return table.concat(hits)
end

local LOOKUP_CHUNK = 1000 -- record keys per ZMSCORE (unpack's stack is bounded)

-- The record keys of several sketches, for expected_each: each sketch's keys (none for
-- those whose flag in asked is false) and every key once, so a session's lookups are
-- one ZMSCORE however many sketches share how many keys.
local function keys_of_each(sketches, asked)
  local each, unique, seen = {}, {}, {}
  for i, sketch in ipairs(sketches) do
    each[i] = {}
    if asked == nil or asked[i] then
      each[i] = record_keys(sketch)
      for _, k in ipairs(each[i]) do
        if not seen[k] then
          seen[k] = true
          unique[#unique + 1] = k
        end
      end
    end
  end
  return {each = each, unique = unique}
end

-- Which of keys.unique (keys_of_each's) the session expects: a set, in one lookup per
-- LOOKUP_CHUNK keys.
local function expected_hits(name, keys)
  local hit = {}
  local unique = keys.unique
  for start = 1, #unique, LOOKUP_CHUNK do
    local stop = math.min(start + LOOKUP_CHUNK - 1, #unique)
    local scores = redis.call('ZMSCORE', key('sx', name), unpack(unique, start, stop))
    for i = start, stop do
      if scores[i - start + 1] then hit[unique[i]] = true end
    end
  end
  return hit
end

-- The keys of list that are in the set hit, concatenated in list's order.
local function concat_hits(list, hit)
  local hits = {}
  for _, k in ipairs(list) do
    if hit[k] then hits[#hits + 1] = k end
  end
  return table.concat(hits)
end

-- expected_of for each sketch of keys_of_each's: {concatenated keys the session
-- expects, ...} ('' for a sketch not asked), the same strings as expected_of's.
local function expected_each(name, keys)
  local hit = expected_hits(name, keys)
  local out = {}
  for i, each in ipairs(keys.each) do out[i] = concat_hits(each, hit) end
  return out
end

-- The keys of keys.unique the session expects, concatenated, in keys.unique's order: what it
-- expects of every sketch asked at once (Python tests each sketch's keys against them).
local function expected_all(name, keys)
  return concat_hits(keys.unique, expected_hits(name, keys))
end

-- assign's step: a full session is no longer on its way back; one that sent a summary
-- is fetching the files of what it was given, which count as held (the newest EXPECTED).
function locality.assigned(eid, name)
  if HOLDER_WAIT then given(eid, name) end
  if free_capacity(name) <= 0 then redis.call('ZREM', key('ret', offer_of(name)), name) end
  local sketch = redis.call('HGET', key('e', eid), 'sk')
  if not sketch or sketch == '' or not has_summary(name) then return end
  local seq = redis.call('INCR', P .. 'xseq')
  local members = {}
  for _, k in ipairs(record_keys(sketch)) do
    members[#members + 1] = seq
    members[#members + 1] = k
  end
  local x = key('sx', name)
  redis.call('ZADD', x, unpack(members))
  redis.call('ZREMRANGEBYRANK', x, 0, -EXPECTED - 1)
end

-- Up to limit sessions in a held call with room that can run req, longest waiting first.
local function idle_sessions(req, limit)
  local all = {}
  for _, offer in ipairs(redis.call('SMEMBERS', key('match', req))) do
    local got = redis.call('ZRANGE', key('idle', offer), 0, limit - 1, 'WITHSCORES')
    for i = 1, #got, 2 do all[#all + 1] = {tonumber(got[i + 1]), got[i]} end
  end
  table.sort(all, function(a, b) return a[1] < b[1] end)
  local out = {}
  for i = 1, math.min(#all, limit) do out[i] = all[i][2] end
  return out
end

-- Up to limit sessions that can run req, back from a call in the last RETURN_WINDOW
-- seconds with a slot free and not in a held call, most recent first (older ones are
-- forgotten).
local function returning_sessions(req, now, limit)
  local since = tonumber(now) - RETURN_WINDOW
  local all = {}
  for _, offer in ipairs(redis.call('SMEMBERS', key('match', req))) do
    local r = key('ret', offer)
    redis.call('ZREMRANGEBYSCORE', r, '-inf', '(' .. since)
    local got = redis.call('ZREVRANGEBYSCORE', r, '+inf', since, 'WITHSCORES')
    for i = 1, #got, 2 do all[#all + 1] = {tonumber(got[i + 1]), got[i]} end
  end
  table.sort(all, function(a, b) return a[1] > b[1] end)
  local out = {}
  for _, item in ipairs(all) do
    if #out >= limit then break end
    local name = item[2]
    local f = redis.call('HMGET', key('s', name), 'hold', 'healthy')
    if f[1] == '' and f[2] == '1' and free_capacity(name) > 0 then out[#out + 1] = name end
  end
  return out
end

-- enqueue's step: queue it, or give it to the only bot that could take it now; true
-- if bots could take it (Python chooses among them: place_bots, place). An urgent one
-- goes to the bot waiting longest, or is queued, as with fifo.
function locality.enqueue(eid, now)
  local f = redis.call('HMGET', key('e', eid), 'req', 'sk')
  if urgent(eid) then
    local name = first_idle(f[1])
    if name then assign(eid, name, now) else push(eid) end
    return false
  end
  local idle = idle_sessions(f[1], 2)
  local back = 0
  if f[2] and f[2] ~= '' then back = #returning_sessions(f[1], now, 1) end
  if #idle == 1 and back == 0 and not contested(f[1], f[2] or '') then
    assign(eid, idle[1], now)
    return false
  end
  push(eid)
  return #idle + back > 0
end

-- Up to OTHERS connected sessions that can run one of reqs, not in skip (a set of
-- names), that sent a summary, the sessions named in first (the holders awaited) before
-- the others: {{session, summary version, the sketches' record keys it expects (all in
-- one string, each key once), given, slots, executions waiting for it}, ...}, for the
-- placement tiers (locality.tier: does another bot hold materially more?) and the holder
-- wait. None if no sketch is of MIN_HOME bytes or more (every tier MINE).
-- What they expect of a sketch is not asked (its keys are left out) if mine[i] (the taker
-- expects all of it: it is MINE to the taker whatever the others hold, and Python asks no
-- estimate), nor of one under MIN_HOME bytes (MINE to every bot).
local function others(reqs, skip, sketches, first, mine)
  local worth = false
  for _, sketch in ipairs(sketches) do
    if sketch_total(sketch) >= MIN_HOME then worth = true end
  end
  local out, seen = {}, {}
  if not worth then return out end
  -- an action under MIN_HOME is MINE to every bot: what others hold of it is not asked ('')
  local asked = {}
  for i, sketch in ipairs(sketches) do asked[i] = sketch_total(sketch) >= MIN_HOME and not (mine and mine[i]) end
  local keys = keys_of_each(sketches, asked)
  local function add(name)
    if name and #out < OTHERS and not skip[name] and not seen[name] and has_summary(name) then
      seen[name] = true
      local f = redis.call('HMGET', key('s', name), 'sv', 'gv', 'cap')
      out[#out + 1] = {name, f[1], expected_all(name, keys), f[2] or '0', f[3], redis.call('SCARD', key('aw', name))}
    end
  end
  for _, name in ipairs(first or {}) do add(name) end
  for _, req in ipairs(reqs) do
    for _, offer in ipairs(redis.call('SMEMBERS', key('match', req))) do
      for _, name in ipairs(redis.call('SRANDMEMBER', key('live', offer), OTHERS + #out)) do
        if #out >= OTHERS then return out end
        add(name)
      end
    end
  end
  return out
end

-- What Python weighs of a bot: {session, returning '1'|'0', summary version ('' if it
-- sent none), leases, capacity, cpu, memory, the sketch's record keys it expects, given}.
local function bot_data(name, returning, sketch)
  local f = redis.call('HMGET', key('s', name), 'sv', 'cap', 'cpu', 'mem', 'gv')
  local version, expected = '', ''
  if has_summary(name) then version, expected = f[1], expected_of(name, sketch) end
  return {name, returning and '1' or '0', version, redis.call('ZCARD', key('sl', name)), f[2], f[3] or '0',
    f[4] or '0', expected, f[5] or '0'}
end

-- An execution's wait for its holder, as Python reads it: {holder awaited or '', its
-- given at the start, deadline, '1' if over, passes}.
local function wait_of(eid)
  local f = redis.call('HMGET', key('e', eid), 'aw', 'am', 'ad', 'wo', 'pass')
  return {f[1] or '', f[2] or '0', f[3] or '0', f[4] or '', f[5] or '0'}
end

-- The bots a queued execution may go to now: false if none or only one (then it is
-- given to that one here, unless it may wait for another: contested), else {sketch,
-- {bot_data, ...}, others, wait_of}: the waiting ones (longest first), then, if it has
-- a sketch, those on their way back (Python keeps those that hold some of it); and
-- other connected bots (the holder it waits for first), for the tiers and the wait.
-- An urgent one goes to the bot waiting longest, if any, as with fifo: false.
function locality.bots(eid, now)
  local f = redis.call('HMGET', key('e', eid), 'stage', 'req', 'sk', 'aw', 'wo')
  if not f[1] or tonumber(f[1]) ~= QUEUED then return false end
  if urgent(eid) then
    local name = first_idle(f[2])
    if name then
      discard(eid)
      assign(eid, name, now)
    end
    return false
  end
  local sketch = f[3] or ''
  local idle = idle_sessions(f[2], MAX_IDLE)
  local back = {}
  if sketch ~= '' then back = returning_sessions(f[2], now, MAX_IDLE) end
  if #idle + #back == 0 then return false end
  if #idle == 1 and #back == 0 and (f[5] == '1' or not contested(f[2], sketch)) then
    discard(eid)
    assign(eid, idle[1], now)
    return false
  end
  local out, skip = {}, {}
  for _, name in ipairs(idle) do
    out[#out + 1] = bot_data(name, false, sketch)
    skip[name] = true
  end
  for _, name in ipairs(back) do
    out[#out + 1] = bot_data(name, true, sketch)
    skip[name] = true
  end
  return {sketch, out, others({f[2]}, skip, {sketch}, {f[4]}), wait_of(eid)}
end

-- Take a queued execution out of its queue; false if it is not queued any more.
function locality.take(eid)
  local f = redis.call('HMGET', key('e', eid), 'stage', 'req', 'qm')
  if not f[1] or tonumber(f[1]) ~= QUEUED or not f[3] then return false end
  if redis.call('ZREM', key('q', f[2]), f[3]) == 1 then
    unqueued(f[2])
    return true
  end
  return false
end

-- The first n queued executions of the best priority among the sets the offer
-- satisfies, oldest first: {{execution id, sketch, passes, record keys the session
-- expects, holder awaited, its given then, deadline, wait over}, ...}, and the other
-- connected bots that can run them (for the tiers). With the holder wait, those that
-- wait for another bot are passed by (up to SKIP_WAITING of them): a deep queue whose
-- oldest all wait for one busy holder does not hide the rest from an idle bot. Those
-- are returned too, {{execution id, how many of the window are older}, ...}: a bot
-- taking a later one passes them over, which counts toward MAX_PASSES (fairness).
function locality.window(name, offer, n, now)
  local best, reqs = nil, {}
  for _, req in ipairs(redis.call('SINTER', key('offreq', offer), P .. 'queues')) do
    local head = redis.call('ZRANGE', key('q', req), 0, 0, 'WITHSCORES')
    if head[1] then
      local score = tonumber(head[2])
      if best == nil or score < best then
        best, reqs = score, {req}
      elseif score == best then
        reqs[#reqs + 1] = req
      end
    end
  end
  if best == nil or best < URGENT_BELOW then return {}, {}, {} end -- urgent ones: the claim's fifo fill
  local members, scan = {}, n
  if HOLDER_WAIT then scan = n + SKIP_WAITING end
  for _, req in ipairs(reqs) do
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', key('q', req), best, best, 'LIMIT', 0, scan)) do
      members[#members + 1] = m
    end
  end
  table.sort(members)
  local skipped, out, sketches, awaited = {}, {}, {}, {}
  for i = 1, math.min(scan, #members) do
    if #out >= n then break end
    local eid = string.sub(members[i], 17)
    local e = redis.call('HMGET', key('e', eid), 'aw', 'am', 'ad', 'wo', 'pass', 'prio', 'sk') -- WAIT_FIELDS, sk
    if HOLDER_WAIT and waiting_for_other(e, name, now) then
      skipped[#skipped + 1] = {eid, #out}
    else
      sketches[#out + 1] = e[7] or ''
      out[#out + 1] = {eid, e[7] or '', e[5] or '0', '', e[1] or '', e[2] or '0', e[3] or '0', e[4] or ''}
      if e[1] then awaited[#awaited + 1] = e[1] end
    end
  end
  -- A sketch all of whose records the taker expects is all held by it (locality.held_bytes),
  -- within MIN_GAIN of its total: MINE to it, so what others hold of it is not asked.
  local keys, mine = keys_of_each(sketches), {}
  for i, expected in ipairs(expected_each(name, keys)) do
    out[i][4] = expected
    mine[i] = MIN_GAIN > 0 and #keys.each[i] > 0 and #expected == 8 * #keys.each[i]
  end
  return out, others(reqs, {[name] = true}, sketches, awaited, mine), skipped
end

-- The best queued execution the offer satisfies, taken unless it waits for a holder
-- other than name (the holder wait: a claim's fill never takes what waits, nor
-- anything behind it, so priorities are not crossed).
local function pop_unless_waiting(name, offer, now)
  local best_req, best_member = best_queued(offer)
  if not best_req then return nil end
  local eid = string.sub(best_member, 17)
  if locality.waits_for_other(eid, name, now) then return nil end
  redis.call('ZREM', key('q', best_req), best_member)
  unqueued(best_req)
  return eid
end

-- The end of every claim: the rest of its free slots by (priority, arrival), then,
-- with a slot still free, the session counts as on its way back (it calls again at
-- once) if it holds calls while busy or runs nothing. `cl` marks the claim: a lease
-- given after it reaches the bot before its call holds (locality.given_since_claim).
function locality.claim_rest(name, healthy, offer, now)
  redis.call('HSET', key('s', name), 'cl', redis.call('GET', P .. 'lseq') or 0)
  if healthy ~= '1' then return end
  local waits = HOLDER_WAIT and has_summary(name)
  while free_capacity(name) > 0 do
    local eid
    if waits then eid = pop_unless_waiting(name, offer, now) else eid = pop_best(offer) end
    if not eid then break end
    assign(eid, name, now)
  end
  if free_capacity(name) > 0 and (redis.call('HGET', key('s', name), 'hwb') == '1'
      or redis.call('ZCARD', key('sl', name)) == 0) then
    redis.call('ZADD', key('ret', offer), now, name)
  end
end

-- Whether the session was given a lease since its last claim: it was on its way back
-- (between two scripts of a call, or two calls), so its call must answer, not hold.
function locality.given_since_claim(name)
  local last = redis.call('ZRANGE', key('sl', name), -1, -1, 'WITHSCORES')
  return last[2] ~= nil and tonumber(last[2]) > tonumber(redis.call('HGET', key('s', name), 'cl') or 0)
end

-- Whether a claim by the rule has something to choose from (hold leaves it to Python):
-- with the holder wait, only if something was queued (or a wait ended) since its last
-- claim, which left queued only what waits for other bots.
function locality.chooses(name, offer)
  if not has_summary(name) or #redis.call('SINTER', key('offreq', offer), P .. 'queues') == 0 then return false end
  return not HOLDER_WAIT
    or tonumber(redis.call('GET', P .. 'qv') or 0) > tonumber(redis.call('HGET', key('s', name), 'cq') or -1)
end

-- claim_window's first step: what was queued by now is what this claim sees (chooses).
function locality.claiming(name)
  if HOLDER_WAIT then redis.call('HSET', key('s', name), 'cq', redis.call('GET', P .. 'qv') or 0) end
end

-- The answer of a call whose claim just ran (answer_of), returned with the claim: a call
-- that does not hold then answers without one more script (redis/session_answers.py).
-- false while the session has cancellations: the answer script tells them, when the
-- call answers.
function locality.answer_ready(name)
  if redis.call('EXISTS', key('sc', name)) == 1 then return false end
  return answer_of(name)
end

-- Take what the bot said (arguments i..i+3: '1' if a filter follows, the filter, cpu
-- or '', memory or ''); returns its filter's version.
function locality.take_summary(name, i)
  local s = key('s', name)
  if arg(i) == '1' then
    redis.call('HSET', s, 'sum', arg(i + 1))
    redis.call('HINCRBY', s, 'sv', 1)
  end
  if arg(i + 2) ~= '' then redis.call('HSET', s, 'cpu', arg(i + 2)) end
  if arg(i + 3) ~= '' then redis.call('HSET', s, 'mem', arg(i + 3)) end
  return redis.call('HGET', s, 'sv') or '0'
end

function locality.closed(name, offer)
  redis.call('ZREM', key('ret', offer), name)
  redis.call('DEL', key('sx', name), key('aw', name))
end
