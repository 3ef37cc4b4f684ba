-- The job failed on the worker. A retryable failure (the worker's ComfyUI died, say) goes
-- back to the head of the user's queue while attempts remain; a cancelled job ends cancelled.
-- error_json is ComfyUI's error (JSON), retry '0' or '1'; gpu_ms and comfy_history as in
-- complete.lua.
local job_id, lease_id, error_json, retry, max_attempts, running_limit, retention_s, history,
  events_maxlen, gpu_ms, comfy_history = args()
local f, err = held(job_id, lease_id)
if err then return {err} end
local state, uid, worker = f[1], f[3], f[4]
running_limit, retention_s, history = tonumber(running_limit), tonumber(retention_s),
  tonumber(history)
local job = k('job', job_id)
local attempt = tonumber(redis.call('HGET', job, 'attempt'))
unlease(job_id, uid, worker, running_limit)
record_run(job_id, gpu_ms, comfy_history)
if cancelled_instead(job_id, uid, state, retention_s, history, events_maxlen) then
  return {'ok', 'cancelled'}
end
redis.call('HSET', job, 'error', error_json)
if retry == '1' and attempt < tonumber(max_attempts) then
  requeue(job_id, state, running_limit)
  emit(events_maxlen, 'requeued', job_id, uid, 'queued', error_json)
  return {'ok', 'queued'}
end
finish(job_id, uid, state, 'failed', retention_s, history)
emit(events_maxlen, 'failed', job_id, uid, 'failed', error_json)
return {'ok', 'failed'}
