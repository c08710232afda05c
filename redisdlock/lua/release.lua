-- Frees the lock if the token owns it and announces the release.
-- KEYS[1] lock key, KEYS[2] info key; ARGV[1] owner token, ARGV[2] release
-- channel, or '' to free the lock without announcing it; ARGV[3] (optional)
-- an attempt number: free the lock only if that counted attempt took it
-- (see acquire.lua).
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
  redis.call('PUBLISH', ARGV[2], '')
end
return 1
