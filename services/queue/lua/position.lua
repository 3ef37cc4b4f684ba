-- Estimated 1-based queue positions. ARGV: prefix, default_mode, then job ids.
local mode = redis.call('GET', k('mode')) or ARGV[2]
local out = {}
for i = 3, #ARGV do table.insert(out, estimate_position(ARGV[i], mode)) end
return out
