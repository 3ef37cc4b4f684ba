-- The worker's ComfyUI began executing the job.
local job_id, lease_id, events_maxlen = args()
local f, err = held(job_id, lease_id)
if err then return {err} end
if f[1] == 'leased' then mark_running(job_id, f[3], events_maxlen) end
return {'ok', redis.call('HGET', k('job', job_id), 'cancel_requested') or '0'}
