-- Enqueue a job. workflow and extra_data are compressed ('' for no extra_data), meta is JSON.
-- Returns {'ok', seq, queued_at, position}, {'limit', queued} or {'taken'} (the id, which a
-- participant may choose as ComfyUI allows, belongs to a job the queue still holds).
-- front is '1' to queue it at the head of the front lane (admins and instructors).
-- Past the user's daily limit (dlimit): {'daily', submitted today, limit, ms to UTC midnight}.
local job_id, user, level, max_queued, running_limit, workflow, meta, events_maxlen,
  extra_data, default_mode, front = args()
local uid, lvl = user, tonumber(level)
if redis.call('EXISTS', k('job', job_id)) == 1 then return {'taken'} end
local queued = tonumber(redis.call('HGET', k('queued'), uid) or 0)
if queued >= tonumber(max_queued) then return {'limit', queued} end
local now = now_ms()
local day = math.floor(now / 86400000)
local today = k('daily', uid, day)
local daily_limit = redis.call('HGET', k('dlimit'), uid)
local submitted = tonumber(redis.call('GET', today) or 0)
if daily_limit and submitted >= tonumber(daily_limit) then
  return {'daily', submitted, daily_limit, (day + 1) * 86400000 - now}
end
redis.call('SET', today, submitted + 1, 'EX', 2 * 86400)
redis.call('HINCRBY', k('ujobcount'), uid, 1)
local seq = redis.call('INCR', k('seq'))
set_state(job_id, nil, 'queued', 'id', job_id, 'user', uid, 'level', lvl, 'seq', seq,
  'attempt', 0, 'queued_at', now, 'meta', meta)
redis.call('SET', k('wf', job_id), workflow)
if extra_data ~= '' then redis.call('SET', k('xd', job_id), extra_data) end
redis.call('ZADD', k('ujobs', uid), seq, job_id)
redis.call('ZADD', k('alljobs'), seq, job_id)
if front == '1' then
  to_front(job_id, seq)
  emit(events_maxlen, 'queued', job_id, uid, 'queued')
  return {'ok', seq, now, 1}
end
redis.call('ZADD', k('uq', uid, lvl), seq, job_id)
redis.call('ZADD', k('pending'), seq, job_id)
redis.call('HINCRBY', k('queued'), uid, 1)
local served = last_served(uid)
local eligible = is_eligible(uid, tonumber(running_limit))
if eligible then
  -- NX: a user already waiting at this level keeps their entries; the new job, last in
  -- their queue, is the head only if the queue was empty.
  redis.call('ZADD', k('ready', lvl), 'NX', served, uid)
  redis.call('ZADD', k('readyseq', lvl), 'NX', seq, uid)
end
WAKE = eligible
emit(events_maxlen, 'queued', job_id, uid, 'queued')
local mode = redis.call('GET', k('mode')) or default_mode
local position
if mode == 'fifo' then
  position = redis.call('ZCARD', k('pending'))  -- the newest job is the last
else
  -- The user's queued jobs are all ahead of this one: every level's in fair mode (`queued`),
  -- this level's in priority mode.
  local mine = mode == 'fair' and queued or own_jobs_ahead(uid, seq, {lvl})
  position = redis.call('ZCARD', k('front')) + scheduled_position(uid, lvl, mine, served, mode)
end
return {'ok', seq, now, position}
