-- The worker's ComfyUI began executing the job. ARGV: prefix, job_id, lease_id, events_maxlen
local job_id = ARGV[2]
local f, err = held(job_id, ARGV[3])
if err then return {err} end
if f[1] == 'leased' then
  redis.call('HSET', k('job', job_id), 'started_at', now_ms())
  set_state(job_id, 'leased', 'running')
  emit(ARGV[4], 'running', job_id, f[3], 'running')
end
return {'ok', redis.call('HGET', k('job', job_id), 'cancel_requested') or '0'}
