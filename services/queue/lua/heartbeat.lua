-- Renew a worker's leases and its liveness. leases is JSON: [[job_id, lease_id], ...].
-- Returns {cancel = held jobs to stop (listed or not), lost = listed leases that are no longer
-- this worker's, drain = 1 while an admin drains this worker, else 0}.
local worker_id, lease_ms, leases = args()
lease_ms = tonumber(lease_ms)
local now = now_ms()
-- A worker that released (left) is not alive again because a late heartbeat came in.
if redis.call('HGET', k('worker', worker_id), 'state') ~= 'released' then
  redis.call('ZADD', k('workers'), now, worker_id)
end
local lost = {}
for _, lease in ipairs(cjson.decode(leases)) do
  local job_id = lease[1]
  local f, err = held(job_id, lease[2])
  if err then
    table.insert(lost, job_id)
  else
    redis.call('HSET', k('job', job_id), 'lease_expires', now + lease_ms)
    redis.call('ZADD', k('leases'), 'XX', now + lease_ms, job_id)
  end
end
-- Every held job's cancel, listed or not: a lease taken while this heartbeat waited counts.
return {cancelled_jobs(worker_id), lost, redis.call('SISMEMBER', k('draining'), worker_id)}
