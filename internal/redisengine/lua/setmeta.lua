-- Replaces the metadata of the token's lock or live shared grant, keeping
-- its fence and expiry, and announces the change on the release channel.
-- KEYS[1] lock key, KEYS[2] info key, KEYS[3] shares, KEYS[4] sinfo,
-- KEYS[5] waiting queue, KEYS[6] waiters' deadlines (same slot; see
-- grants.lua); ARGV[1] owner token, ARGV[2] metadata, ARGV[3] release
-- channel, or '' to announce nothing.
-- The announcement names the queue's first live waiter, as release.lua's
-- does, so that no other exclusive waiter tries in vain.
-- Returns 1 when changed, 0 when the token holds no live grant.
local lock, info, shares, sinfo, queue, waits = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local token, meta, channel = ARGV[1], ARGV[2], ARGV[3]

local held = redis.pcall('GET', lock)
if held == token then
  local d = {token = token}
  local raw = redis.call('GET', info)
  if raw then
    local ok, v = pcall(cjson.decode, raw)
    if ok and type(v) == 'table' and v.token == token then d = v end
  end
  d.meta = meta
  local pttl = redis.call('PTTL', lock)
  if pttl > 0 then
    redis.call('SET', info, cjson.encode(d), 'PX', pttl)
  else
    redis.call('SET', info, cjson.encode(d))
  end
  announce(channel, queue, waits)
  return 1
end
if held ~= false then
  return 0
end
local score = redis.call('ZSCORE', shares, token)
if not (score and tonumber(score) > nowMs()) then
  return 0
end
local d = shareInfo(redis.call('HGET', sinfo, token))
d.meta = meta
redis.call('HSET', sinfo, token, cjson.encode(d))
announce(channel, queue, waits)
return 1
