-- Delete every finished job of `user` (ComfyUI's POST /history {"clear": true}); live jobs
-- stay. O(the user's jobs): bounded by history_per_user plus the live ones. Returns the count.
local user = args()
local ujobs = k('ujobs', user)
local deleted = 0
for _, job_id in ipairs(redis.call('ZRANGE', ujobs, 0, -1)) do
  local state = redis.call('HGET', k('job', job_id), 'state')
  if not (state and LIVE[state]) then
    redis.call('DEL', k('job', job_id), k('wf', job_id), k('xd', job_id))
    redis.call('ZREM', ujobs, job_id)
    redis.call('ZREM', k('alljobs'), job_id)
    if state then deleted = deleted + 1 end
  end
end
return deleted
