-- Extends the lease, of the lock or of a shared grant, if the token owns it.
-- KEYS[1] lock key, KEYS[2] info key, KEYS[3] shares, KEYS[4] sinfo,
-- KEYS[5] slimit (same slot; see grants.lua); ARGV[1] owner token, ARGV[2]
-- TTL in ms
-- Returns 1 when the lock was extended, 2 + the stored limit when a shared
-- grant was, 0 when the token owns neither.
local held = redis.pcall('GET', KEYS[1])
if held == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
if held ~= false or redis.call('EXISTS', KEYS[3]) == 0 then
  return 0
end
local score = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not score then
  return 0
end
local now = nowMs()
if tonumber(score) <= now then
  return 0
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
expireShares(KEYS[3], KEYS[4], KEYS[5], now)
return 2 + (tonumber(redis.call('GET', KEYS[5]) or '') or 0)
