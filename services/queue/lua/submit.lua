-- Enqueue a job. ARGV: prefix, job_id, user, level, max_queued, running_limit,
-- workflow (compressed), meta (JSON), events_maxlen, extra_data (compressed, or ''),
-- default_mode. Returns {'ok', seq, queued_at, position} or {'limit', queued}.
local job_id, uid, lvl = ARGV[2], ARGV[3], tonumber(ARGV[4])
local max_queued, running_limit = tonumber(ARGV[5]), tonumber(ARGV[6])
local queued = tonumber(redis.call('HGET', k('queued'), uid) or 0)
if queued >= max_queued then return {'limit', queued} end
local seq = redis.call('INCR', k('seq'))
local now = now_ms()
set_state(job_id, nil, 'queued', 'id', job_id, 'user', uid, 'level', lvl, 'seq', seq,
  'attempt', 0, 'queued_at', now, 'meta', ARGV[8])
redis.call('SET', k('wf', job_id), ARGV[7])
if ARGV[10] ~= '' then redis.call('SET', k('xd', job_id), ARGV[10]) end
redis.call('ZADD', k('uq', uid, lvl), seq, job_id)
redis.call('ZADD', k('pending'), seq, job_id)
redis.call('ZADD', k('ujobs', uid), seq, job_id)
redis.call('ZADD', k('alljobs'), seq, job_id)
redis.call('HINCRBY', k('queued'), uid, 1)
local served = last_served(uid)
local eligible = is_eligible(uid, running_limit)
if eligible then
  -- NX: a user already waiting at this level keeps their entries; the new job, last in
  -- their queue, is the head only if the queue was empty.
  redis.call('ZADD', k('ready', lvl), 'NX', served, uid)
  redis.call('ZADD', k('readyseq', lvl), 'NX', seq, uid)
end
WAKE = eligible
emit(ARGV[9], 'queued', job_id, uid, 'queued')
local mode = redis.call('GET', k('mode')) or ARGV[11]
local position
if mode == 'fifo' then
  position = redis.call('ZCARD', k('pending'))  -- the newest job is the last
else
  -- The user's queued jobs are all ahead of this one: every level's in fair mode (`queued`),
  -- this level's in priority mode.
  local mine = mode == 'fair' and queued or own_jobs_ahead(uid, seq, {lvl})
  position = scheduled_position(uid, lvl, mine, served, mode)
end
return {'ok', seq, now, position}
