-- A worker's success report and its next lease in one step: one round trip between jobs.
-- Returns {complete's result} when the completion is refused (nothing is leased then),
-- else {complete's result, claim's result}. gpu_ms and comfy_history as in complete.lua,
-- prefetch and idle_ms as in claim.lua.
local job_id, lease_id, outputs, running_limit, retention_s, history, events_maxlen,
  worker_id, next_lease_id, lease_ms, default_mode, gpu_ms, comfy_history, prefetch,
  idle_ms = args()
running_limit = tonumber(running_limit)
local done = complete(job_id, lease_id, outputs, running_limit, tonumber(retention_s),
  tonumber(history), events_maxlen)
if done[1] ~= 'ok' then return {done} end
record_run(job_id, gpu_ms, comfy_history)
return {done, lease_next(worker_id, next_lease_id, tonumber(lease_ms), running_limit,
  default_mode, events_maxlen, prefetch == '1', tonumber(idle_ms))}
