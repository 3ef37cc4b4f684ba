-- Renew a worker's leases and its liveness.
-- ARGV: prefix, worker_id, lease_ms, then pairs of (job_id, lease_id)
-- Returns {cancel = jobs to stop, lost = leases that are no longer this worker's}.
local worker, lease_ms = ARGV[2], tonumber(ARGV[3])
local now = now_ms()
redis.call('ZADD', k('workers'), now, worker)
local cancel, lost = {}, {}
for i = 4, #ARGV, 2 do
  local job_id = ARGV[i]
  local f, err = held(job_id, ARGV[i + 1])
  if err then
    table.insert(lost, job_id)
  else
    redis.call('HSET', k('job', job_id), 'lease_expires', now + lease_ms)
    redis.call('ZADD', k('leases'), 'XX', now + lease_ms, job_id)
    if redis.call('HGET', k('job', job_id), 'cancel_requested') == '1' then
      table.insert(cancel, job_id)
    end
  end
end
return {cancel, lost}
