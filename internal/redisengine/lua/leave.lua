-- Takes a client out of a key's waiting queue (it stopped waiting) and, if
-- it was first, or a shared waiter (one within the free permits), while the
-- lock key is free, wakes the waiters (all of them: those the queue now
-- lets through take the key, the others find it kept).
-- KEYS[1] lock key, KEYS[2] waiting queue, KEYS[3] waiters' deadlines
-- (same slot); ARGV[1] the client's waiter id, ARGV[2] release channel.
-- The client's entry is its id, or its id followed by '*' as a shared
-- waiter (see queue.lua).
-- Returns 1 when the client was in the queue, else 0.
local first = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
local shared = ARGV[1] .. '*'
local left = ARGV[1]
if redis.call('ZREM', KEYS[2], left) == 0 then
  left = shared
  if redis.call('ZREM', KEYS[2], left) == 0 then
    return 0
  end
end
redis.call('ZREM', KEYS[3], left)
if (first == left or left == shared) and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('PUBLISH', ARGV[2], '')
end
return 1
