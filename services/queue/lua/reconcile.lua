-- Rebuild every user's ready-set entries from their queues and the running limit in force.
-- Run once when a service starts: the limit may have changed since the entries were made
-- (a user parked under a limit of 1 must come back under a limit of 3), and the scripts
-- otherwise only touch what a transition changed. O(users x levels), a few ms for hundreds.
-- Returns the number of users looked at.
local running_limit = args()
running_limit = tonumber(running_limit)
local n = 0
-- Every user who ever queued a job has a field in `queued` (counts go to 0, never away).
for _, uid in ipairs(redis.call('HKEYS', k('queued'))) do
  set_parked(uid, not is_eligible(uid, running_limit))
  n = n + 1
end
return n
