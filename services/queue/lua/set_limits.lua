-- An admin's limits for one user: running ('' = the queue's running_limit) and daily submits
-- ('' = none). The user is parked or unparked at once under the new running limit; `data`
-- (JSON) goes out with the `limits` event, which wakes every long-polling worker.
local uid, running, daily, running_limit, events_maxlen, data = args()
if running == '' then
  redis.call('HDEL', k('rlimit'), uid)
else
  redis.call('HSET', k('rlimit'), uid, running)
end
if daily == '' then
  redis.call('HDEL', k('dlimit'), uid)
else
  redis.call('HSET', k('dlimit'), uid, daily)
end
local eligible = is_eligible(uid, tonumber(running_limit))
set_parked(uid, not eligible)
emit(events_maxlen, 'limits', '', '', '', data)
return {'ok'}
