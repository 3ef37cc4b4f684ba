-- Lease the next job for a worker (see `claim` in lib.lua).
-- ARGV: prefix, worker_id, lease_id, lease_ms, running_limit, default_mode, events_maxlen
return claim(ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7])
