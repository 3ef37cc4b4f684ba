-- Queued jobs that some workers declined fail once no live worker (seen within
-- lost_after_ms) is left that has not declined them: the worker that could run them went
-- away, and they must not wait for ever. Run with the lease reaper. Returns the failed ids.
local lost_after_ms, running_limit, retention_s, history, events_maxlen = args()
lost_after_ms, running_limit = tonumber(lost_after_ms), tonumber(running_limit)
local failed = {}
for _, job_id in ipairs(redis.call('SMEMBERS', k('declinedjobs'))) do
  local job = k('job', job_id)
  local f = redis.call('HMGET', job, 'state', 'user', 'level', 'decline_error')
  if not (f[1] and LIVE[f[1]]) then
    redis.call('SREM', k('declinedjobs'), job_id)
  elseif f[1] == 'queued' and not capable_worker_left(job_id, lost_after_ms) then
    dequeue(job_id, f[2], f[3], running_limit)
    redis.call('HSET', job, 'error', f[4] or '{}')
    finish(job_id, f[2], 'queued', 'failed', tonumber(retention_s), tonumber(history))
    emit(events_maxlen, 'failed', job_id, f[2], 'failed', f[4] or '{}')
    redis.call('SREM', k('declinedjobs'), job_id)
    table.insert(failed, job_id)
  end
end
return failed
