-- The job succeeded (see `complete` in lib.lua). outputs is JSON.
local job_id, lease_id, outputs, running_limit, retention_s, history, events_maxlen = args()
return complete(job_id, lease_id, outputs, tonumber(running_limit), tonumber(retention_s),
  tonumber(history), events_maxlen)
