-- Lease the next job for a worker (see `claim` and `lease_next` in lib.lua). prefetch is '1'
-- for a busy worker's prefetch lease; idle_ms (> 0) marks an idle worker that finds nothing
-- as waiting for that long.
local worker_id, lease_id, lease_ms, running_limit, default_mode, events_maxlen, prefetch,
  idle_ms = args()
return lease_next(worker_id, lease_id, tonumber(lease_ms), tonumber(running_limit),
  default_mode, events_maxlen, prefetch == '1', tonumber(idle_ms))
