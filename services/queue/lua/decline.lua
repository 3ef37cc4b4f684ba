-- The worker lacks a model or node the job's graph needs. The job goes back to the head of its
-- user's queue without spending an attempt and is never offered to this worker again (see
-- `lease_next` in lib.lua); if no live worker (seen within lost_after_ms) is left that has not
-- declined it, it fails at once with error_json (ComfyUI's error, as this worker's ComfyUI
-- would have answered). The `declined` event wakes every long-polling worker: the next one
-- able to run it must not sleep through it. Returns {'ok', new state} or {error}.
local job_id, lease_id, error_json, lost_after_ms, running_limit, retention_s, history,
  events_maxlen = args()
local f, err = held(job_id, lease_id)
if err then return {err} end
local state, uid, worker = f[1], f[3], f[4]
running_limit, retention_s, history = tonumber(running_limit), tonumber(retention_s),
  tonumber(history)
local job = k('job', job_id)
unlease(job_id, uid, worker, running_limit)
if cancelled_instead(job_id, uid, state, retention_s, history, events_maxlen) then
  return {'ok', 'cancelled'}
end
redis.call('SADD', k('declined', job_id), worker)
redis.call('EXPIRE', k('declined', job_id), retention_s)
redis.call('SADD', k('wdeclined', worker), job_id)
redis.call('EXPIRE', k('wdeclined', worker), retention_s)
redis.call('HSET', job, 'decline_error', error_json)
redis.call('HINCRBY', job, 'attempt', -1)
local data = cjson.encode({worker = worker, reason = 'declined'})
if not capable_worker_left(job_id, tonumber(lost_after_ms)) then
  redis.call('HSET', job, 'error', error_json)
  finish(job_id, uid, state, 'failed', retention_s, history)
  emit(events_maxlen, 'failed', job_id, uid, 'failed', error_json)
  return {'ok', 'failed'}
end
redis.call('SADD', k('declinedjobs'), job_id)
requeue(job_id, state, running_limit)
emit(events_maxlen, 'declined', job_id, uid, 'queued', data)
return {'ok', 'queued'}
