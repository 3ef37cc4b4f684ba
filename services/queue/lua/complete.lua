-- The job succeeded (see `complete` in lib.lua). outputs is JSON; gpu_ms (a number) and
-- comfy_history (JSON: ComfyUI's history entry without prompt and outputs) may be ''.
local job_id, lease_id, outputs, running_limit, retention_s, history, events_maxlen, gpu_ms,
  comfy_history = args()
local done = complete(job_id, lease_id, outputs, tonumber(running_limit), tonumber(retention_s),
  tonumber(history), events_maxlen)
if done[1] == 'ok' then record_run(job_id, gpu_ms, comfy_history) end
return done
