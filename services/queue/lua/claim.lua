-- Lease the next job for a worker (see `claim` in lib.lua).
local worker_id, lease_id, lease_ms, running_limit, default_mode, events_maxlen = args()
return claim(worker_id, lease_id, tonumber(lease_ms), tonumber(running_limit), default_mode,
  events_maxlen)
