-- A worker shuts down cleanly: its jobs go back to the head of their queues without
-- spending an attempt, and it leaves the worker table (and the draining set).
local worker_id, running_limit, retention_s, history, events_maxlen = args()
running_limit = tonumber(running_limit)
local released = 0
for _, job_id in ipairs(redis.call('SMEMBERS', k('wjobs', worker_id))) do
  local f = redis.call('HMGET', k('job', job_id), 'state', 'user')
  if f[1] == 'leased' or f[1] == 'running' then
    give_back(job_id, f[1], f[2], worker_id, running_limit, tonumber(retention_s),
      tonumber(history), events_maxlen)
    released = released + 1
  end
end
redis.call('DEL', k('wjobs', worker_id))
redis.call('ZREM', k('workers'), worker_id)
redis.call('ZREM', k('idle'), worker_id)
redis.call('SREM', k('draining'), worker_id)  -- it left: a drain ends with it
redis.call('HSET', k('worker', worker_id), 'state', 'released', 'released_at', now_ms())
redis.call('EXPIRE', k('worker', worker_id), 86400)
-- The day's cost still counts it: remembered as long as its hash (older entries go now).
redis.call('ZADD', k('released'), now_ms(), worker_id)
redis.call('ZREMRANGEBYSCORE', k('released'), '-inf', now_ms() - 86400000)
return released
