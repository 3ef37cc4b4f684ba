-- Lease the next job for a worker, by the scheduling mode stored under `mode`.
-- ARGV: prefix, worker_id, lease_id, lease_ms, running_limit, default_mode, events_maxlen
-- Cost: a constant number of sorted-set operations per level, O(log n) each.
-- Returns {cancel} when nothing is ready, else {cancel, job hash, workflow, extra_data}, where
-- cancel lists the jobs this worker holds whose owner asked to cancel them.
local worker, lease_id = ARGV[2], ARGV[3]
local lease_ms, running_limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local mode = redis.call('GET', k('mode')) or ARGV[6]
redis.call('ZADD', k('workers'), now_ms(), worker)  -- a worker asking for work is alive
local uid, lvl
local cancel = {}
for _, held_id in ipairs(redis.call('SMEMBERS', k('wjobs', worker))) do
  if redis.call('HGET', k('job', held_id), 'cancel_requested') == '1' then
    table.insert(cancel, held_id)
  end
end

if mode == 'priority' then
  for _, l in ipairs(LEVELS) do
    local top = redis.call('ZRANGE', k('ready', l), 0, 0)
    if #top > 0 then uid, lvl = top[1], l; break end
  end
elseif mode == 'fair' then
  local best
  for _, l in ipairs(LEVELS) do
    local top = redis.call('ZRANGE', k('ready', l), 0, 0, 'WITHSCORES')
    if #top > 0 and (best == nil or tonumber(top[2]) < best) then
      best, uid = tonumber(top[2]), top[1]
    end
  end
  if uid then
    local oldest
    for _, l in ipairs(LEVELS) do
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

local job_id = redis.call('ZPOPMIN', k('uq', uid, lvl))[1]
redis.call('ZREM', k('pending'), job_id)
redis.call('HINCRBY', k('queued'), uid, -1)
redis.call('HINCRBY', k('running'), uid, 1)
redis.call('HSET', k('lastserved'), uid, redis.call('INCR', k('served')))
refresh_user(uid, running_limit)

local now = now_ms()
local job = k('job', job_id)
redis.call('HINCRBY', job, 'attempt', 1)
redis.call('HSET', job, 'worker', worker, 'lease', lease_id, 'leased_at', now,
  'lease_expires', now + lease_ms)
set_state(job_id, 'queued', 'leased')
redis.call('ZADD', k('leases'), now + lease_ms, job_id)
redis.call('SADD', k('wjobs', worker), job_id)
emit(ARGV[7], 'leased', job_id, uid, 'leased', cjson.encode({worker = worker}))
return {cancel, redis.call('HGETALL', job), redis.call('GET', k('wf', job_id)),
  redis.call('GET', k('xd', job_id)) or ''}
