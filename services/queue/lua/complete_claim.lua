-- A worker's success report and its next lease in one step: one round trip between jobs.
-- ARGV: prefix, job_id, lease_id, outputs (JSON), running_limit, retention_s,
-- history_per_user, events_maxlen, worker_id, new lease_id, lease_ms, default_mode
-- Returns {complete's result} when the completion is refused (nothing is leased then),
-- else {complete's result, claim's result}.
local done = complete(ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]),
  tonumber(ARGV[7]), ARGV[8])
if done[1] ~= 'ok' then return {done} end
return {done, claim(ARGV[9], ARGV[10], tonumber(ARGV[11]), tonumber(ARGV[5]), ARGV[12], ARGV[8])}
