-- Handle leases that expired (their worker stopped heartbeating): requeue the job at the head
-- of its user's queue, or fail it once it has used up its attempts. At most `batch` jobs.
local max_attempts, running_limit, retention_s, history, batch, events_maxlen = args()
max_attempts, running_limit = tonumber(max_attempts), tonumber(running_limit)
retention_s, history = tonumber(retention_s), tonumber(history)
local now = now_ms()
local expired = redis.call('ZRANGE', k('leases'), '-inf', now, 'BYSCORE', 'LIMIT', 0,
  tonumber(batch))
local out = {}
for _, job_id in ipairs(expired) do
  local job = k('job', job_id)
  local f = redis.call('HMGET', job, 'state', 'user', 'worker', 'attempt', 'cancel_requested')
  local state, uid, worker, attempt = f[1], f[2], f[3], tonumber(f[4] or 0)
  if not state then
    redis.call('ZREM', k('leases'), job_id)
  else
    unlease(job_id, uid, worker, running_limit)
    local data = cjson.encode({worker = worker, attempt = attempt, reason = 'lease_expired'})
    if f[5] == '1' then
      finish(job_id, uid, state, 'cancelled', retention_s, history)
      emit(events_maxlen, 'cancelled', job_id, uid, 'cancelled', data)
      table.insert(out, {job_id, 'cancelled'})
    elseif attempt >= max_attempts then
      redis.call('HSET', job, 'error', cjson.encode({
        type = 'lease_expired',
        message = 'gave up after ' .. attempt .. ' attempts: each time the worker running '
          .. 'this job stopped responding before it finished',
        details = 'last worker: ' .. (worker or '?'),
      }))
      finish(job_id, uid, state, 'failed', retention_s, history)
      emit(events_maxlen, 'failed', job_id, uid, 'failed', data)
      table.insert(out, {job_id, 'failed'})
    else
      requeue(job_id, state, running_limit)
      emit(events_maxlen, 'requeued', job_id, uid, 'queued', data)
      table.insert(out, {job_id, 'queued'})
    end
  end
end
return out
