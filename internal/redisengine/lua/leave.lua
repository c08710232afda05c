-- Takes a client out of a key's waiting queue (it stopped waiting) and, if
-- it was first while the key is free, wakes the waiters (all of them: the
-- next live one takes the key, the others find it kept for that one).
-- KEYS[1] lock key, KEYS[2] waiting queue, KEYS[3] waiters' deadlines
-- (same slot); ARGV[1] the client's waiter id, ARGV[2] release channel.
-- Returns 1 when the client was in the queue, else 0.
local first = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then
  return 0
end
redis.call('ZREM', KEYS[3], ARGV[1])
if first == ARGV[1] and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('PUBLISH', ARGV[2], '')
end
return 1
