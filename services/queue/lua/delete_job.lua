-- Delete a finished job from its owner's history (ComfyUI's POST /history {"delete"}).
-- requester: '' for an admin, else the user who asks. Returns {'ok'}, {'not_found'} or
-- {'live', state} (a job still queued or running is cancelled, not deleted).
local job_id, requester = args()
local f = redis.call('HMGET', k('job', job_id), 'state', 'user')
local state, uid = f[1], f[2]
if not state or (requester ~= '' and requester ~= uid) then return {'not_found'} end
if LIVE[state] then return {'live', state} end
redis.call('DEL', k('job', job_id), k('wf', job_id), k('xd', job_id))
redis.call('ZREM', k('ujobs', uid), job_id)
redis.call('ZREM', k('alljobs'), job_id)
return {'ok'}
