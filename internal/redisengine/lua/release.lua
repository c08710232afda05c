-- Frees the lock if the token owns it and announces the release.
-- KEYS[1] lock key, KEYS[2] info key, optionally KEYS[3] waiting queue and
-- KEYS[4] waiters' deadlines (same slot); ARGV[1] owner token, ARGV[2] release
-- channel, or '' to free the lock without announcing it; ARGV[3] (optional)
-- an attempt number: free the lock only if that counted attempt took it
-- (see acquire.lua).
-- The wake-up names the first live waiter of the queue, so that only that
-- client tries; it is empty (everyone may try) when the queue is empty.
-- Returns 1 when released, 0 when the token does not own the lock.
if redis.pcall('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[3] then
  local raw = redis.call('GET', KEYS[2])
  if not raw then return 0 end
  local ok, d = pcall(cjson.decode, raw)
  if not (ok and type(d) == 'table' and d.token == ARGV[1] and d.attempt == ARGV[3]) then
    return 0
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
if ARGV[2] ~= '' then
  local first = ''
  if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then
    first = queueHead(KEYS[3], KEYS[4], nowMs()) or ''
  end
  redis.call('PUBLISH', ARGV[2], first)
end
return 1
