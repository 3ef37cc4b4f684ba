-- Estimated 1-based queue positions (0: not queued). job_ids is JSON: [job_id, ...].
local default_mode, job_ids = args()
local mode = redis.call('GET', k('mode')) or default_mode
local out = {}
for _, job_id in ipairs(cjson.decode(job_ids)) do
  table.insert(out, estimate_position(job_id, mode))
end
return out
