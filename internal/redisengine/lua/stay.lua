-- Renews a waiting client's entry in a key's queue, if it is there (as an
-- exclusive or a shared waiter, see queue.lua).
-- KEYS[1] waiting queue, KEYS[2] waiters' deadlines (same slot);
-- ARGV[1] the client's waiter id, ARGV[2] how long the entry lives, in ms.
-- Returns 1 when renewed, 0 when the client is not in the queue.
local entry = ARGV[1]
if not redis.call('ZSCORE', KEYS[1], entry) then
  entry = entry .. '*'
  if not redis.call('ZSCORE', KEYS[1], entry) then
    return 0
  end
end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], nowMs() + ttl, entry)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
