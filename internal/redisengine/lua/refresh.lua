-- Extends the lease if the token owns the lock.
-- KEYS[1] lock key, KEYS[2] info key; ARGV[1] owner token, ARGV[2] TTL in ms
-- Returns 1 when extended, 0 when the token does not own the lock.
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0
