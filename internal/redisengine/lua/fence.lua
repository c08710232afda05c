-- Raises a key's fence counter to at least a given fence and, when the token
-- holds the lock or a live shared grant of the key, records that fence as
-- the grant's, marked recorded (rec: inspect.lua reports it, and Redlock's
-- Inspect prefers a recorded fence to one a node chose alone).
-- KEYS[1] lock key, KEYS[2] fence counter, KEYS[3] info key, KEYS[4]
-- shares, KEYS[5] sinfo (same slot; see grants.lua)
-- ARGV[1] owner token, ARGV[2] fence (decimal string), ARGV[3] counter TTL in ms
-- Returns 1 when the token holds the lock or a shared grant (its fence is
-- now ARGV[2]), else 0.
local lock, counter, info = KEYS[1], KEYS[2], KEYS[3]
local token, fence, counterTTL = ARGV[1], ARGV[2], ARGV[3]
local want = tonumber(fence)
local last = tonumber(redis.call('GET', counter) or '')
if last and last > want then
  redis.call('PEXPIRE', counter, counterTTL)
else
  redis.call('SET', counter, fence, 'PX', counterTTL)
end
local held = redis.pcall('GET', lock)
if held == false then
  local score = redis.call('ZSCORE', KEYS[4], token)
  if not (score and tonumber(score) > nowMs()) then
    return 0
  end
  local d = shareInfo(redis.call('HGET', KEYS[5], token))
  redis.call('HSET', KEYS[5], token, cjson.encode({fence = fence, meta = d.meta, attempt = d.attempt, rec = '1'}))
  return 1
end
if held ~= token then
  return 0
end
local meta, attempt = '', nil
local raw = redis.call('GET', info)
if raw then
  local ok, d = pcall(cjson.decode, raw)
  if ok and type(d) == 'table' and d.token == token then
    if type(d.meta) == 'string' then meta = d.meta end
    if type(d.attempt) == 'string' then attempt = d.attempt end
  end
end
local pttl = redis.call('PTTL', lock)
if pttl > 0 then
  redis.call('SET', info, cjson.encode({fence = fence, token = token, meta = meta, attempt = attempt, rec = '1'}), 'PX', pttl)
end
return 1
