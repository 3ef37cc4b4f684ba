-- Cancel a job. A queued job is removed at once; a leased or running one is flagged and its
-- worker learns of it on its next heartbeat, progress or lease call.
-- requester: '' for an admin (may cancel anyone's), else the user who asks.
local job_id, requester, running_limit, retention_s, history, events_maxlen = args()
local job = k('job', job_id)
local f = redis.call('HMGET', job, 'state', 'user', 'level')
local state, uid, lvl = f[1], f[2], f[3]
if not state or (requester ~= '' and requester ~= uid) then return {'not_found'} end
if state == 'queued' then
  dequeue(job_id, uid, lvl, tonumber(running_limit))
  finish(job_id, uid, state, 'cancelled', tonumber(retention_s), tonumber(history))
  emit(events_maxlen, 'cancelled', job_id, uid, 'cancelled')
  return {'ok', 'cancelled'}
end
if state == 'leased' or state == 'running' then
  if redis.call('HGET', job, 'cancel_requested') ~= '1' then
    redis.call('HSET', job, 'cancel_requested', '1')
    emit(events_maxlen, 'cancel_requested', job_id, uid, state)
  end
  return {'ok', state}
end
return {'final', state}
