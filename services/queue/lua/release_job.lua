-- A worker gives one held job back (see `give_back` in lib.lua): its prefetched job at
-- shutdown, its running job when the shutdown grace ran out, a job its ComfyUI lost before it
-- started. Returns {'ok', new state} or {error}.
local job_id, lease_id, running_limit, retention_s, history, events_maxlen = args()
local f, err = held(job_id, lease_id)
if err then return {err} end
return {'ok', give_back(job_id, f[1], f[3], f[4], tonumber(running_limit), tonumber(retention_s),
  tonumber(history), events_maxlen)}
