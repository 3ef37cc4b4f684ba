-- A batch of ComfyUI messages about a job, relayed by its worker in the order ComfyUI sent
-- them: one `comfy` event each, data {"type", "data", "client_id"} (the job's client_id).
-- messages is a JSON list of JSON texts, each a `{"type": ..., "data": ...}` object as the
-- worker encoded it: the text is kept as is (decoding and re-encoding ComfyUI's data in Lua
-- would turn [] into {} and 1.0 into 1), only the client_id is appended. progress is the
-- batch's last progress step (JSON {value, max, node}) or ''; start is '1' when the batch
-- holds execution_start: the job is then running, as /start would mark it. Renews the lease.
-- Returns {'ok', cancel_requested} or {error}.
local job_id, lease_id, lease_ms, messages, progress, start, events_maxlen = args()
local f, err = held(job_id, lease_id, 'meta')
if err then return {err} end
local state, uid = f[1], f[3]
local job = k('job', job_id)
if start == '1' and state == 'leased' then
  mark_running(job_id, uid, events_maxlen)
  state = 'running'
end
local client_id = cjson.null
if f[5] then
  local meta = cjson.decode(f[5])
  if meta.client_id ~= nil then client_id = meta.client_id end
end
local tail = ',"client_id":' .. cjson.encode(client_id) .. '}'
for _, text in ipairs(cjson.decode(messages)) do
  emit(events_maxlen, 'comfy', job_id, uid, state, string.sub(text, 1, -2) .. tail)
end
local expires = now_ms() + tonumber(lease_ms)
if progress ~= '' then redis.call('HSET', job, 'progress', progress) end
redis.call('HSET', job, 'lease_expires', expires)
redis.call('ZADD', k('leases'), 'XX', expires, job_id)
return {'ok', redis.call('HGET', job, 'cancel_requested') or '0'}
