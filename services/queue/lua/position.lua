-- Estimated 1-based queue position of queued jobs, under the current mode.
-- ARGV: prefix, default_mode, then job ids. Returns one number per id (0 = not queued).
-- O(users) per job: a read-path estimate, never run by the scheduler itself.
local mode = redis.call('GET', k('mode')) or ARGV[2]

-- Queued jobs of `uid` at levels in `lvls` with a sequence below `seq`, and in total.
local function counts(uid, lvls, seq)
  local before, total = 0, 0
  for _, l in ipairs(lvls) do
    local q = k('uq', uid, l)
    total = total + redis.call('ZCARD', q)
    if seq then before = before + redis.call('ZCOUNT', q, '-inf', '(' .. seq) end
  end
  return before, total
end

-- Users in the ready sets of `lvls`, with their last-served clock.
local function ready_users(lvls)
  local users = {}
  for _, l in ipairs(lvls) do
    local members = redis.call('ZRANGE', k('ready', l), 0, -1, 'WITHSCORES')
    for i = 1, #members, 2 do users[members[i]] = tonumber(members[i + 1]) end
  end
  return users
end

-- Round-robin estimate: each other user is served once per round, ahead of us in a round
-- if they were served less recently.
local function round_robin(uid, seq, lvls)
  local mine = counts(uid, lvls, seq)
  local my_served = tonumber(redis.call('HGET', k('lastserved'), uid) or 0)
  local ahead = mine
  for other, served in pairs(ready_users(lvls)) do
    if other ~= uid then
      local _, total = counts(other, lvls, nil)
      local rounds = mine
      if served < my_served then rounds = rounds + 1 end
      ahead = ahead + math.min(total, rounds)
    end
  end
  return ahead + 1
end

local out = {}
for i = 3, #ARGV do
  local job_id = ARGV[i]
  local seq = redis.call('ZSCORE', k('pending'), job_id)
  if not seq then
    table.insert(out, 0)
  elseif mode == 'fifo' then
    table.insert(out, redis.call('ZCOUNT', k('pending'), '-inf', seq))
  else
    local f = redis.call('HMGET', k('job', job_id), 'user', 'level')
    if mode == 'fair' then
      table.insert(out, round_robin(f[1], seq, LEVELS))
    else
      local lvl, higher = tonumber(f[2]), 0
      for other, _ in pairs(ready_users({2, 1})) do
        for l = lvl + 1, 2 do higher = higher + redis.call('ZCARD', k('uq', other, l)) end
      end
      table.insert(out, higher + round_robin(f[1], seq, {lvl}))
    end
  end
end
return out
