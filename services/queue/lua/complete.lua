-- The job succeeded (see `complete` in lib.lua). ARGV: prefix, job_id, lease_id,
-- outputs (JSON), running_limit, retention_s, history_per_user, events_maxlen
return complete(ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]),
  tonumber(ARGV[7]), ARGV[8])
