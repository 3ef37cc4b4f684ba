-- The job succeeded. ARGV: prefix, job_id, lease_id, outputs (JSON), running_limit,
-- retention_s, history_per_user, events_maxlen
local job_id = ARGV[2]
local f, err = held(job_id, ARGV[3])
if err then return {err} end
local state, uid, worker = f[1], f[3], f[4]
redis.call('HSET', k('job', job_id), 'outputs', ARGV[4])
unlease(job_id, uid, worker, tonumber(ARGV[5]))
finish(job_id, uid, state, 'succeeded', tonumber(ARGV[6]), tonumber(ARGV[7]))
emit(ARGV[8], 'succeeded', job_id, uid, 'succeeded', ARGV[4])
return {'ok', redis.call('HMGET', k('job', job_id), 'queued_at', 'leased_at', 'started_at',
  'finished_at')}
