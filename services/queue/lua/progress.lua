-- A progress step from the worker; it also renews the lease.
-- ARGV: prefix, job_id, lease_id, lease_ms, progress (JSON), events_maxlen
local job_id = ARGV[2]
local f, err = held(job_id, ARGV[3])
if err then return {err} end
local expires = now_ms() + tonumber(ARGV[4])
redis.call('HSET', k('job', job_id), 'progress', ARGV[5], 'lease_expires', expires)
redis.call('ZADD', k('leases'), 'XX', expires, job_id)
emit(ARGV[6], 'progress', job_id, f[3], f[1], ARGV[5])
return {'ok', redis.call('HGET', k('job', job_id), 'cancel_requested') or '0'}
