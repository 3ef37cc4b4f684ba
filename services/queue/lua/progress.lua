-- A progress step from the worker (progress is JSON); it also renews the lease.
local job_id, lease_id, lease_ms, progress, events_maxlen = args()
local f, err = held(job_id, lease_id)
if err then return {err} end
local expires = now_ms() + tonumber(lease_ms)
redis.call('HSET', k('job', job_id), 'progress', progress, 'lease_expires', expires)
redis.call('ZADD', k('leases'), 'XX', expires, job_id)
emit(events_maxlen, 'progress', job_id, f[3], f[1], progress)
return {'ok', redis.call('HGET', k('job', job_id), 'cancel_requested') or '0'}
