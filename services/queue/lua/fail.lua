-- The job failed on the worker. A retryable failure (the worker's ComfyUI died, say) goes
-- back to the head of the user's queue while attempts remain; a cancelled job ends cancelled.
-- ARGV: prefix, job_id, lease_id, error (JSON), retry (0/1), max_attempts, running_limit,
-- retention_s, history_per_user, events_maxlen
local job_id = ARGV[2]
local f, err = held(job_id, ARGV[3])
if err then return {err} end
local state, uid, worker = f[1], f[3], f[4]
local running_limit = tonumber(ARGV[7])
local job = k('job', job_id)
local attempt = tonumber(redis.call('HGET', job, 'attempt'))
unlease(job_id, uid, worker, running_limit)
if redis.call('HGET', job, 'cancel_requested') == '1' then
  finish(job_id, uid, state, 'cancelled', tonumber(ARGV[8]), tonumber(ARGV[9]))
  emit(ARGV[10], 'cancelled', job_id, uid, 'cancelled')
  return {'ok', 'cancelled'}
end
redis.call('HSET', job, 'error', ARGV[4])
if ARGV[5] == '1' and attempt < tonumber(ARGV[6]) then
  requeue(job_id, state, running_limit)
  emit(ARGV[10], 'requeued', job_id, uid, 'queued', ARGV[4])
  return {'ok', 'queued'}
end
finish(job_id, uid, state, 'failed', tonumber(ARGV[8]), tonumber(ARGV[9]))
emit(ARGV[10], 'failed', job_id, uid, 'failed', ARGV[4])
return {'ok', 'failed'}
