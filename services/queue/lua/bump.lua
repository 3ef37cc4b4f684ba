-- Put a queued job at the head of the front lane: claimed before every other queued job,
-- whatever the mode (a job already there moves to its head). Returns {'ok'}, {'not_found'}
-- or {'state', state} when the job is not queued.
local job_id, running_limit, events_maxlen = args()
local f = redis.call('HMGET', k('job', job_id), 'state', 'user', 'level', 'seq')
if not f[1] then return {'not_found'} end
if f[1] ~= 'queued' then return {'state', f[1]} end
dequeue(job_id, f[2], f[3], tonumber(running_limit))
to_front(job_id, f[4])
emit(events_maxlen, 'bumped', job_id, f[2], 'queued')
return {'ok'}
