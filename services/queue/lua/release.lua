-- A worker shuts down cleanly: its jobs go back to the head of their queues without
-- spending an attempt, and it leaves the worker table.
-- ARGV: prefix, worker_id, running_limit, retention_s, history_per_user, events_maxlen
local worker, running_limit = ARGV[2], tonumber(ARGV[3])
local released = 0
for _, job_id in ipairs(redis.call('SMEMBERS', k('wjobs', worker))) do
  local job = k('job', job_id)
  local f = redis.call('HMGET', job, 'state', 'user', 'worker', 'cancel_requested')
  if f[1] == 'leased' or f[1] == 'running' then
    unlease(job_id, f[2], worker, running_limit)
    if f[4] == '1' then
      finish(job_id, f[2], f[1], 'cancelled', tonumber(ARGV[4]), tonumber(ARGV[5]))
      emit(ARGV[6], 'cancelled', job_id, f[2], 'cancelled')
    else
      redis.call('HINCRBY', job, 'attempt', -1)
      requeue(job_id, f[1], running_limit)
      emit(ARGV[6], 'requeued', job_id, f[2], 'queued', cjson.encode({reason = 'worker_released'}))
    end
    released = released + 1
  end
end
redis.call('DEL', k('wjobs', worker))
redis.call('ZREM', k('workers'), worker)
redis.call('HSET', k('worker', worker), 'state', 'released', 'released_at', now_ms())
redis.call('EXPIRE', k('worker', worker), 86400)
return released
