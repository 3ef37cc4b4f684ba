-- Shared helpers, prepended to every script by services/queue/scripts.py.
--
-- Arguments, by name (the convention; scripts.py's docstring and docs/architecture.md say the
-- same). Each script is declared once in scripts.py (`class Scripts`) with its argument names
-- in order, and is called from Python by those names. Every call sends the key prefix first,
-- read here and only here (P, used by `k`); a script takes its own arguments in its first
-- statement, by the same names in the same order, and reads ARGV nowhere else:
--     local job_id, lease_id, events_maxlen = args()
-- scripts.py refuses to load a script whose names differ from its declaration. Numbers
-- arrive as strings (tonumber them); lists and maps as JSON (cjson.decode them).
--
-- Data model (see docs/architecture.md):
--   job:<id>          hash   the job record
--   wf:<id>, xd:<id>  string compressed workflow and extra_data (JSON, zlib)
--   uq:<uid>:<lvl>    zset   a user's queued jobs at a level, by submit sequence
--   ready:<lvl>       zset   users who may be served at a level, by last-served clock (fair)
--   readyseq:<lvl>    zset   the same users, by the sequence of their oldest job (fifo)
--   pending           zset   every queued job, by sequence
--   leases            zset   leased/running jobs, by lease expiry (ms)
--   front             zset   the front lane: queued jobs an admin bumped (or an instructor
--                            queued with front: true), claimed before any mode's pick, newest
--                            bump first (score: -INCR frontseq, also kept in the job's `front`
--                            field so a requeued job goes back there). Its jobs are in
--                            `pending` but not in any uq:<uid>:<lvl> nor counted in `queued`.
-- Invariant of the ready sets: a user is in ready:<lvl> and readyseq:<lvl> exactly when they
-- are under their running limit and uq:<uid>:<lvl> is not empty; the score in ready:<lvl> is
-- their last-served clock (HGET lastserved), the one in readyseq:<lvl> the head's sequence.
-- Each transition touches only what it changed (a cycle is ~64 commands, each ~1-4 us);
-- reconcile.lua rebuilds them all when a service starts.
local P = ARGV[1]
local function args() return unpack(ARGV, 2) end
local LEVELS = {2, 1, 0}
local ADMIN_INDEX_SIZE = 10000  -- newest jobs listed in the admin's index
-- The cockpit's statistics (services/queue/stats.py reads them): per-minute buckets, kept
-- twice the hour shown. STATS_BUCKET_MS is services/contracts.py's STATS_BUCKET_S (a test checks).
local STATS_BUCKET_MS = 60000
local STATS_KEEP_S = 7200
local WAITS_PER_MINUTE = 1000  -- the newest queue waits kept per minute (p50, max)
local RECENT_GPU = 50          -- GPU times of the newest finished jobs kept (the ETA's median)

-- A key: `k('job', id)` is P .. 'job:' .. id. Plain concatenation; no table per key.
local function k(a, b, c)
  if c ~= nil then return P .. a .. ':' .. b .. ':' .. c end
  if b ~= nil then return P .. a .. ':' .. b end
  return P .. a
end

-- The clock, read once per script: one script is one instant.
local NOW
local function now_ms()
  if not NOW then
    local t = redis.call('TIME')
    NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return NOW
end

-- Set by a transition that made one more job claimable; the next event emitted carries
-- `wake=1`, which wakes one long-polling worker (services/queue/events.py). Events without it
-- (a lease, a success that freed no waiting job...) wake nobody: no claim in vain.
local WAKE = false

local function emit(maxlen, etype, job_id, user, state, data)
  local wake = WAKE and '1' or '0'
  WAKE = false
  return redis.call('XADD', k('events'), 'MAXLEN', '~', maxlen, '*',
    'type', etype, 'job', job_id, 'user', user, 'state', state, 'data', data or '{}',
    'wake', wake)
end

local LIVE = {queued = true, leased = true, running = true}

-- `states` counts live jobs by state; `totals` counts jobs that ended, by final state.
-- Extra field/value pairs are written to the job hash in the same HSET.
local function set_state(job_id, old, new, ...)
  redis.call('HSET', k('job', job_id), 'state', new, ...)
  if old and LIVE[old] then redis.call('HINCRBY', k('states'), old, -1) end
  if LIVE[new] then
    redis.call('HINCRBY', k('states'), new, 1)
  else
    redis.call('HINCRBY', k('totals'), new, 1)
  end
end

local function last_served(uid)
  return redis.call('HGET', k('lastserved'), uid) or 0
end

-- Re-establish the ready-set invariant for `uid` at one level, whose queue head changed.
-- `served` may be passed when the caller knows it.
local function ready_level(uid, lvl, eligible, served)
  local head = eligible and redis.call('ZRANGE', k('uq', uid, lvl), 0, 0, 'WITHSCORES') or {}
  if #head == 0 then
    redis.call('ZREM', k('ready', lvl), uid)
    redis.call('ZREM', k('readyseq', lvl), uid)
    return
  end
  redis.call('ZADD', k('ready', lvl), served or last_served(uid), uid)
  redis.call('ZADD', k('readyseq', lvl), head[2], uid)
end

-- The user's running limit: an admin's override (rlimit), else the queue's.
local function limit_for(uid, running_limit)
  return tonumber(redis.call('HGET', k('rlimit'), uid) or running_limit)
end

-- A user at their running limit is parked: out of every ready set until a job of theirs ends.
local function is_eligible(uid, running_limit)
  return tonumber(redis.call('HGET', k('running'), uid) or 0) < limit_for(uid, running_limit)
end

-- The user's eligibility flipped: take them out of, or put them back into, every level.
local function set_parked(uid, parked)
  local served = (not parked) and last_served(uid) or nil
  for _, lvl in ipairs(LEVELS) do ready_level(uid, lvl, not parked, served) end
end

-- Take a leased or running job away from its worker (and from the lease table).
local function unlease(job_id, uid, worker, running_limit)
  redis.call('ZREM', k('leases'), job_id)
  if worker and worker ~= '' then redis.call('SREM', k('wjobs', worker), job_id) end
  local running = redis.call('HINCRBY', k('running'), uid, -1)
  redis.call('HDEL', k('job', job_id), 'lease', 'lease_expires')
  -- Back under the running limit: the user was parked and is not any more. If jobs of theirs
  -- wait, one of them just became claimable.
  if running == limit_for(uid, running_limit) - 1 then
    set_parked(uid, false)
    if tonumber(redis.call('HGET', k('queued'), uid) or 0) > 0 then WAKE = true end
  end
end

-- Back to the head of its user's queue: it keeps its original sequence number.
local function requeue(job_id, old_state, running_limit)
  local job = k('job', job_id)
  local f = redis.call('HMGET', job, 'user', 'level', 'seq', 'front')
  local uid, lvl, seq = f[1], f[2], f[3]
  redis.call('ZADD', k('pending'), seq, job_id)
  redis.call('HDEL', job, 'worker', 'leased_at', 'started_at', 'progress')
  set_state(job_id, old_state, 'queued')
  if f[4] then  -- a bumped job goes back to the front lane, whatever its user's limit
    redis.call('ZADD', k('front'), f[4], job_id)
    WAKE = true
    return
  end
  redis.call('ZADD', k('uq', uid, lvl), seq, job_id)
  redis.call('HINCRBY', k('queued'), uid, 1)
  local eligible = is_eligible(uid, running_limit)
  ready_level(uid, lvl, eligible)  -- it is the new head of its level
  if eligible then WAKE = true end
end

-- A job reached a final state: keep it for the user's history, bounded in count and time.
-- Its lease, if it had one, is already gone (unlease). Extra field/value pairs are stored.
local function finish(job_id, uid, old_state, new_state, retention_s, history, ...)
  local job = k('job', job_id)
  set_state(job_id, old_state, new_state, 'finished_at', now_ms(), ...)
  if new_state ~= 'cancelled' then  -- throughput: done/failed per minute
    local tput = k('tput', math.floor(now_ms() / STATS_BUCKET_MS))
    if redis.call('HINCRBY', tput, new_state == 'succeeded' and 'done' or 'failed', 1) == 1 then
      redis.call('EXPIRE', tput, STATS_KEEP_S)  -- the minute's first done (or first failed)
    end
  end
  redis.call('EXPIRE', job, retention_s)
  redis.call('EXPIRE', k('wf', job_id), retention_s)
  redis.call('EXPIRE', k('xd', job_id), retention_s)
  redis.call('ZREMRANGEBYRANK', k('alljobs'), 0, -(ADMIN_INDEX_SIZE + 1))
  local ujobs = k('ujobs', uid)
  local excess = redis.call('ZCARD', ujobs) - history
  if excess > 0 then
    for _, old in ipairs(redis.call('ZRANGE', ujobs, 0, excess - 1)) do
      local st = redis.call('HGET', k('job', old), 'state')
      if not (st and LIVE[st]) then
        redis.call('DEL', k('job', old), k('wf', old), k('xd', old))
        redis.call('ZREM', ujobs, old)
      end
    end
  end
end

-- Check that `lease_id` is the live lease of `job_id`; return the job's fields (state, lease,
-- user, worker, then the extra fields named in `...`) or an error.
local function held(job_id, lease_id, ...)
  local f = redis.call('HMGET', k('job', job_id), 'state', 'lease', 'user', 'worker', ...)
  if not f[1] then return nil, 'not_found' end
  if f[2] ~= lease_id or (f[1] ~= 'leased' and f[1] ~= 'running') then
    return nil, 'lease_lost'
  end
  return f, nil
end

-- Users in the ready sets of `lvls`: their names, last-served clocks and queued-job counts.
-- A handful of commands whatever the number of users (the counts come in one HMGET).
local function ready_users(lvls)
  local names, served, queued = {}, {}, {}
  for _, l in ipairs(lvls) do
    local members = redis.call('ZRANGE', k('ready', l), 0, -1, 'WITHSCORES')
    for i = 1, #members, 2 do
      if not served[members[i]] then table.insert(names, members[i]) end
      served[members[i]] = tonumber(members[i + 1])
    end
  end
  for first = 1, #names, 500 do  -- unpack has a stack limit; 500 names per HMGET
    local batch = {unpack(names, first, math.min(first + 499, #names))}
    local counts = redis.call('HMGET', k('queued'), unpack(batch))
    for i, name in ipairs(batch) do queued[name] = tonumber(counts[i] or 0) end
  end
  return names, served, queued
end

-- How many of `uid`'s queued jobs at `lvls` come before sequence number `seq`.
local function own_jobs_ahead(uid, seq, lvls)
  local n = 0
  for _, l in ipairs(lvls) do
    n = n + redis.call('ZCOUNT', k('uq', uid, l), '-inf', '(' .. seq)
  end
  return n
end

-- Whether `other` is served before `uid` within a round: less recently served, or, on a tie
-- (never served), first by name, which is how the ready sets order them.
local function goes_before(other, other_served, uid, my_served)
  return other_served < my_served or (other_served == my_served and other < uid)
end

-- Round-robin estimate for a job of `uid` with `mine` of their own jobs ahead of it: each
-- other ready user is served once per round, first in a round if they go before `uid`.
-- Other users' counts span all levels: a user's jobs sit at the one level of their role, so
-- this is exact unless a role changed mid-queue.
local function round_robin(uid, mine, my_served, lvls)
  my_served = tonumber(my_served)
  if mine == 0 then
    -- First in their own line: each ready user who goes before them has one job ahead (every
    -- ready user has a job waiting). Ranks and counts, O(log n) whatever the number of users.
    local ahead = 0
    for _, l in ipairs(lvls) do
      ahead = ahead + (redis.call('ZRANK', k('ready', l), uid)
        or redis.call('ZCOUNT', k('ready', l), '-inf', '(' .. my_served))
    end
    return ahead + 1
  end
  local names, served, queued = ready_users(lvls)
  local ahead = mine
  for _, other in ipairs(names) do
    if other ~= uid then
      local rounds = mine
      if goes_before(other, served[other], uid, my_served) then rounds = rounds + 1 end
      ahead = ahead + math.min(queued[other], rounds)
    end
  end
  return ahead + 1
end

-- Jobs waiting at levels above `lvl`: in priority mode they all go first.
local function queued_above(lvl)
  local above = {}
  for l = lvl + 1, 2 do table.insert(above, l) end
  if #above == 0 then return 0 end
  local names, _, queued = ready_users(above)
  local n = 0
  for _, other in ipairs(names) do n = n + queued[other] end
  return n
end

-- Estimated 1-based position of a queued job of `uid` at `lvl` in fair or priority mode,
-- given `mine`, the user's own jobs ahead of it (at every level for fair, at `lvl` for
-- priority), and the user's last-served clock.
local function scheduled_position(uid, lvl, mine, served, mode)
  if mode == 'fair' then return round_robin(uid, mine, served, LEVELS) end
  return queued_above(lvl) + round_robin(uid, mine, served, {lvl})
end

-- Estimated 1-based queue position of a queued job under `mode` (0 if not queued).
-- A read-path estimate, never part of choosing the next job: O(1) commands, O(users) work.
-- The front lane goes first: a job in it is at its rank there, every other job behind all of
-- it (fifo counts the lane's jobs older than this one among `pending` already).
local function estimate_position(job_id, mode)
  local seq = redis.call('ZSCORE', k('pending'), job_id)
  if not seq then return 0 end
  local lane = redis.call('ZCARD', k('front'))
  if lane > 0 then
    local rank = redis.call('ZRANK', k('front'), job_id)
    if rank then return rank + 1 end
  end
  if mode == 'fifo' then
    local n = redis.call('ZCOUNT', k('pending'), '-inf', seq)
    if lane > 0 then
      for _, other in ipairs(redis.call('ZRANGE', k('front'), 0, -1)) do
        if tonumber(redis.call('ZSCORE', k('pending'), other) or 0) > tonumber(seq) then
          n = n + 1
        end
      end
    end
    return n
  end
  local f = redis.call('HMGET', k('job', job_id), 'user', 'level')
  local uid, lvl = f[1], tonumber(f[2])
  local mine = own_jobs_ahead(uid, seq, mode == 'fair' and LEVELS or {lvl})
  return lane + scheduled_position(uid, lvl, mine, last_served(uid), mode)
end

-- The job succeeded: store its outputs and free its worker's slot.
-- Returns {'ok', {queued_at, leased_at, started_at, finished_at}} or {error}.
local function complete(job_id, lease_id, outputs, running_limit, retention_s, history, maxlen)
  local f, err = held(job_id, lease_id, 'queued_at', 'leased_at', 'started_at')
  if err then return {err} end
  local state, uid, worker = f[1], f[3], f[4]
  unlease(job_id, uid, worker, running_limit)
  finish(job_id, uid, state, 'succeeded', retention_s, history, 'outputs', outputs)
  emit(maxlen, 'succeeded', job_id, uid, 'succeeded', outputs)
  return {'ok', {f[5], f[6], f[7], now_ms()}}
end

-- The jobs `worker` holds whose owner asked to cancel them.
local function cancelled_jobs(worker)
  local cancel = {}
  for _, held_id in ipairs(redis.call('SMEMBERS', k('wjobs', worker))) do
    if redis.call('HGET', k('job', held_id), 'cancel_requested') == '1' then
      table.insert(cancel, held_id)
    end
  end
  return cancel
end

-- Lease the next job for `worker` by the scheduling mode stored under `mode`.
-- Cost: a constant number of sorted-set operations per level, O(log n) each.
-- Returns {cancel} when nothing is ready, else {cancel, job hash, workflow, extra_data}, where
-- cancel lists the jobs this worker holds whose owner asked to cancel them.
local function claim(worker, lease_id, lease_ms, running_limit, default_mode, maxlen)
  local mode = redis.call('GET', k('mode')) or default_mode
  local now = now_ms()
  redis.call('ZADD', k('workers'), now, worker)  -- a worker asking for work is alive
  local uid, lvl, job_id
  local cancel = cancelled_jobs(worker)

  local lane = redis.call('ZRANGE', k('front'), 0, 0)
  if #lane > 0 then  -- the front lane first, whatever the mode
    job_id = lane[1]
    redis.call('ZREM', k('front'), job_id)
    local f = redis.call('HMGET', k('job', job_id), 'user', 'level')
    uid, lvl = f[1], tonumber(f[2])
  elseif mode == 'priority' then
    for _, l in ipairs(LEVELS) do
      local top = redis.call('ZRANGE', k('ready', l), 0, 0)
      if #top > 0 then uid, lvl = top[1], l; break end
    end
  elseif mode == 'fair' then
    local best, filled = nil, {}
    for _, l in ipairs(LEVELS) do
      local top = redis.call('ZRANGE', k('ready', l), 0, 0, 'WITHSCORES')
      if #top > 0 then
        table.insert(filled, l)
        if best == nil or tonumber(top[2]) < best then best, uid, lvl = tonumber(top[2]), top[1], l end
      end
    end
    if #filled > 1 then  -- the user's oldest job may sit at another level
      local oldest
      for _, l in ipairs(filled) do
        local s = redis.call('ZSCORE', k('readyseq', l), uid)
        if s and (oldest == nil or tonumber(s) < oldest) then oldest, lvl = tonumber(s), l end
      end
    end
  else
    local oldest
    for _, l in ipairs(LEVELS) do
      local top = redis.call('ZRANGE', k('readyseq', l), 0, 0, 'WITHSCORES')
      if #top > 0 and (oldest == nil or tonumber(top[2]) < oldest) then
        oldest, uid, lvl = tonumber(top[2]), top[1], l
      end
    end
  end
  if not uid then return {cancel} end

  if not job_id then
    job_id = redis.call('ZPOPMIN', k('uq', uid, lvl))[1]
    redis.call('HINCRBY', k('queued'), uid, -1)
  end
  redis.call('ZREM', k('pending'), job_id)
  local running = redis.call('HINCRBY', k('running'), uid, 1)
  local served = redis.call('INCR', k('served'))
  redis.call('HSET', k('lastserved'), uid, served)
  -- The ready sets: reaching the running limit parks the user; otherwise this level has a
  -- new head, and the user's served clock moved on at every level.
  if running >= limit_for(uid, running_limit) then
    set_parked(uid, true)
  else
    ready_level(uid, lvl, true, served)
    for _, l in ipairs(LEVELS) do
      if l ~= lvl then redis.call('ZADD', k('ready', l), 'XX', served, uid) end
    end
  end

  local job = k('job', job_id)
  redis.call('HINCRBY', job, 'attempt', 1)
  if redis.call('HSETNX', job, 'first_leased_at', now) == 1 then  -- its queue wait, once
    local waits = k('waits', math.floor(now / STATS_BUCKET_MS))
    local n = redis.call('RPUSH', waits, now - tonumber(redis.call('HGET', job, 'queued_at')))
    if n == 1 then redis.call('EXPIRE', waits, STATS_KEEP_S) end
    if n > WAITS_PER_MINUTE then redis.call('LTRIM', waits, -WAITS_PER_MINUTE, -1) end
  end
  set_state(job_id, 'queued', 'leased', 'worker', worker, 'lease', lease_id, 'leased_at', now,
    'lease_expires', now + lease_ms)
  redis.call('ZADD', k('leases'), now + lease_ms, job_id)
  redis.call('SADD', k('wjobs', worker), job_id)
  emit(maxlen, 'leased', job_id, uid, 'leased', cjson.encode({worker = worker}))
  return {cancel, redis.call('HGETALL', job), redis.call('GET', k('wf', job_id)),
    redis.call('GET', k('xd', job_id)) or ''}
end

-- ---- the worker protocol's rules (docs/architecture.md: "Prefetch, declines, relay") ----
--   idle              zset   workers waiting in an idle (non-prefetch) long-poll, by until (ms)
--   declined:<id>     set    workers that declined job <id> (they lack a model or node)
--   wdeclined:<w>     set    jobs worker <w> declined: never offered to it again
--   declinedjobs      set    queued jobs someone declined (reap_declined.lua checks them)
--   paused            string set while an admin paused the queue: no claim leases anything
--   rlimit, dlimit    hash   uid -> an admin's override of the running limit; daily submits
--   daily:<uid>:<day> string jobs uid submitted on UTC day <day> (days since the epoch)
--   ujobcount, ugpums hash   uid -> jobs submitted, GPU milliseconds used (usage)
--   tput:<minute>     hash   jobs that ended in that minute (minutes since the epoch):
--                            done, failed (cancelled ones are not counted); expires after 2 h
--   waits:<minute>    list   queue waits (ms, submit to first lease) of the jobs first leased
--                            in that minute, the newest WAITS_PER_MINUTE; expires after 2 h
--                            (a job's `first_leased_at` field marks it counted)
--   recentgpu         list   GPU ms of the newest RECENT_GPU jobs that reported one (ETA)
--   released          zset   workers that released (left), by when; kept a day, as their
--                            worker:<id> hash (released_at), for the day's cost
--   draining          set    workers an admin is draining: they finish what they hold and
--                            lease nothing new; their lease answers say so ({cancel, 'drain'})

-- Take a queued job out of its user's queue (cancel, or hidden from a claim); the ready sets
-- follow: its level's head may change.
local function dequeue(job_id, uid, lvl, running_limit)
  redis.call('ZREM', k('pending'), job_id)
  if redis.call('ZREM', k('front'), job_id) == 1 then return end
  redis.call('ZREM', k('uq', uid, lvl), job_id)
  redis.call('HINCRBY', k('queued'), uid, -1)
  ready_level(uid, lvl, is_eligible(uid, running_limit))
end

-- Put a job taken out by `dequeue` back, in its place (its sequence number, or the front).
local function reenqueue(job_id, uid, lvl, seq, running_limit)
  redis.call('ZADD', k('pending'), seq, job_id)
  local front = redis.call('HGET', k('job', job_id), 'front')
  if front then
    redis.call('ZADD', k('front'), front, job_id)
    return
  end
  redis.call('ZADD', k('uq', uid, lvl), seq, job_id)
  redis.call('HINCRBY', k('queued'), uid, 1)
  ready_level(uid, lvl, is_eligible(uid, running_limit))
end

-- Put a queued job (already out of its user's queue) at the head of the front lane.
local function to_front(job_id, seq)
  local score = -redis.call('INCR', k('frontseq'))
  redis.call('HSET', k('job', job_id), 'front', score)
  redis.call('ZADD', k('front'), score, job_id)
  redis.call('ZADD', k('pending'), seq, job_id)
  WAKE = true  -- claimable now, whatever its user's running limit
end

-- The job's ComfyUI began executing it (a /start call, or its relayed execution_start).
local function mark_running(job_id, uid, maxlen)
  redis.call('HSET', k('job', job_id), 'started_at', now_ms())
  set_state(job_id, 'leased', 'running')
  emit(maxlen, 'running', job_id, uid, 'running')
end

-- What the worker measured and read back from ComfyUI: GPU milliseconds (execution_start to
-- its end, ComfyUI's timestamps) and the history entry's status and meta (JSON). '' = none.
local function record_run(job_id, gpu_ms, comfy_history)
  if gpu_ms ~= '' then
    redis.call('HSET', k('job', job_id), 'gpu_ms', gpu_ms)
    redis.call('HINCRBY', k('ugpums'), redis.call('HGET', k('job', job_id), 'user'), gpu_ms)
    redis.call('LPUSH', k('recentgpu'), gpu_ms)
    redis.call('LTRIM', k('recentgpu'), 0, RECENT_GPU - 1)
  end
  if comfy_history ~= '' then redis.call('HSET', k('job', job_id), 'comfy_history', comfy_history) end
end

-- A job its worker let go of (unleased) whose owner asked to cancel it ends cancelled, whatever
-- the worker reports. Returns whether it did.
local function cancelled_instead(job_id, uid, state, retention_s, history, maxlen)
  if redis.call('HGET', k('job', job_id), 'cancel_requested') ~= '1' then return false end
  finish(job_id, uid, state, 'cancelled', retention_s, history)
  emit(maxlen, 'cancelled', job_id, uid, 'cancelled')
  return true
end

-- A worker gives a held job back without running it to the end (shutdown, its ComfyUI lost a
-- job it had not started): requeued at the head without spending the attempt, or cancelled if
-- its owner asked. Returns the job's new state.
local function give_back(job_id, state, uid, worker, running_limit, retention_s, history, maxlen)
  local job = k('job', job_id)
  unlease(job_id, uid, worker, running_limit)
  if cancelled_instead(job_id, uid, state, retention_s, history, maxlen) then
    return 'cancelled'
  end
  redis.call('HINCRBY', job, 'attempt', -1)
  requeue(job_id, state, running_limit)
  emit(maxlen, 'requeued', job_id, uid, 'queued', cjson.encode({reason = 'worker_released'}))
  return 'queued'
end

-- Whether a live worker (seen within lost_after_ms) has not declined `job_id`.
local function capable_worker_left(job_id, lost_after_ms)
  local live = redis.call('ZRANGE', k('workers'), now_ms() - lost_after_ms, '+inf', 'BYSCORE')
  for _, w in ipairs(live) do
    if redis.call('SISMEMBER', k('declined', job_id), w) == 0 then return true end
  end
  return false
end

-- Lease the next job for `worker` by claim's rules, and the worker protocol's on top:
-- - prefetch: the worker is busy and wants a job to queue behind its running one: refused
--   while any worker waits in an idle long-poll (a job must not wait behind another while a
--   GPU is free), on any replica: the waiters are in `idle`;
-- - an idle claim that finds nothing marks the worker idle for idle_ms (its long-poll's rest);
--   a claim that leases something unmarks it;
-- - the jobs this worker declined are hidden from it for the claim (O(its declines)).
-- Returns what claim returns.
local function lease_next(worker, lease_id, lease_ms, running_limit, default_mode, maxlen,
                          prefetch, idle_ms)
  local now = now_ms()
  -- A worker that released (left) gets nothing: a long-poll still waiting for it on some
  -- replica must not lease a job to a worker that is gone, nor mark it alive again.
  if redis.call('HGET', k('worker', worker), 'state') == 'released' then
    return {{}, 'released'}
  end
  if redis.call('SISMEMBER', k('draining'), worker) == 1 then
    redis.call('ZADD', k('workers'), now, worker)
    redis.call('ZREM', k('idle'), worker)
    return {cancelled_jobs(worker), 'drain'}
  end
  if redis.call('EXISTS', k('paused')) == 1 then  -- an admin paused the queue: lease nothing
    redis.call('ZADD', k('workers'), now, worker)
    return {cancelled_jobs(worker)}
  end
  if prefetch and redis.call('ZCOUNT', k('idle'), '(' .. now, '+inf') > 0 then
    redis.call('ZADD', k('workers'), now, worker)  -- a worker asking for work is alive
    return {cancelled_jobs(worker)}
  end
  local hidden = {}
  for _, job_id in ipairs(redis.call('SMEMBERS', k('wdeclined', worker))) do
    local f = redis.call('HMGET', k('job', job_id), 'state', 'user', 'level', 'seq')
    if f[1] == 'queued' then
      dequeue(job_id, f[2], f[3], running_limit)
      table.insert(hidden, {job_id, f[2], f[3], f[4]})
    elseif not (f[1] and LIVE[f[1]]) then
      redis.call('SREM', k('wdeclined', worker), job_id)
    end
  end
  local result = claim(worker, lease_id, lease_ms, running_limit, default_mode, maxlen)
  for _, h in ipairs(hidden) do reenqueue(h[1], h[2], h[3], h[4], running_limit) end
  if #result > 1 then
    redis.call('ZREM', k('idle'), worker)
  elseif not prefetch and idle_ms > 0 then
    redis.call('ZADD', k('idle'), now + idle_ms, worker)
  end
  return result
end
