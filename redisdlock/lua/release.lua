-- Frees the lock if the token owns it and announces the release.
-- KEYS[1] lock key, KEYS[2] info key; ARGV[1] owner token, ARGV[2] release channel
-- Returns 1 when released, 0 when the token does not own the lock.
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('PUBLISH', ARGV[2], '')
  return 1
end
return 0
