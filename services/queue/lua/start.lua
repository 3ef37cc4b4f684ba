-- The worker's ComfyUI began executing the job.
local job_id, lease_id, events_maxlen = args()
local f, err = held(job_id, lease_id)
if err then return {err} end
if f[1] == 'leased' then
  redis.call('HSET', k('job', job_id), 'started_at', now_ms())
  set_state(job_id, 'leased', 'running')
  emit(events_maxlen, 'running', job_id, f[3], 'running')
end
return {'ok', redis.call('HGET', k('job', job_id), 'cancel_requested') or '0'}
