-- A worker shuts down cleanly: its jobs go back to the head of their queues without
-- spending an attempt, and it leaves the worker table.
local worker_id, running_limit, retention_s, history, events_maxlen = args()
running_limit = tonumber(running_limit)
local released = 0
for _, job_id in ipairs(redis.call('SMEMBERS', k('wjobs', worker_id))) do
  local job = k('job', job_id)
  local f = redis.call('HMGET', job, 'state', 'user', 'worker', 'cancel_requested')
  if f[1] == 'leased' or f[1] == 'running' then
    unlease(job_id, f[2], worker_id, running_limit)
    if f[4] == '1' then
      finish(job_id, f[2], f[1], 'cancelled', tonumber(retention_s), tonumber(history))
      emit(events_maxlen, 'cancelled', job_id, f[2], 'cancelled')
    else
      redis.call('HINCRBY', job, 'attempt', -1)
      requeue(job_id, f[1], running_limit)
      emit(events_maxlen, 'requeued', job_id, f[2], 'queued',
        cjson.encode({reason = 'worker_released'}))
    end
    released = released + 1
  end
end
redis.call('DEL', k('wjobs', worker_id))
redis.call('ZREM', k('workers'), worker_id)
redis.call('HSET', k('worker', worker_id), 'state', 'released', 'released_at', now_ms())
redis.call('EXPIRE', k('worker', worker_id), 86400)
return released
