-- Renews a waiting client's entry in a key's queue, if it is there.
-- KEYS[1] waiting queue, KEYS[2] waiters' deadlines (same slot);
-- ARGV[1] the client's waiter id, ARGV[2] how long the entry lives, in ms.
-- Returns 1 when renewed, 0 when the client is not in the queue.
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], nowMs() + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
