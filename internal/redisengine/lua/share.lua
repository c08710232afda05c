-- One attempt at a shared grant of a key, in one round trip.
-- KEYS[1] lock key, KEYS[2] fence counter, KEYS[3] shares, KEYS[4] sinfo,
-- KEYS[5] slimit, KEYS[6] writers, KEYS[7] waiting queue, KEYS[8]
-- waiters' deadlines (same slot; see grants.lua)
-- ARGV[1] owner token, ARGV[2] TTL in ms, ARGV[3] metadata, ARGV[4] counter
-- TTL in ms, ARGV[5] the limit (0: none), ARGV[6] the client's waiter id,
-- then, for a counted attempt, ARGV[7] 'counted' and ARGV[8] the attempt
-- number (see acquire.lua).
-- Granted while the lock key does not exist, no live writer record exists,
-- no other client waits first in the key's queue (an exclusive waiter: a
-- shared grant does not overtake it) and fewer than the limit of shared
-- grants are live; a token that has a live grant renews it, keeping its
-- fence.
-- Returns {1, fence} when granted, {0, ms} when not (what stands in the
-- way ends in ms: the lock's PTTL, -1 without expiry, the first shared
-- grant's or writer record's end, the queued waiter's entry's end), or {2, limit} when the live grants were
-- taken with another limit.
local lock, counter, shares, sinfo, slimit, writers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local queue, waits = KEYS[7], KEYS[8]
local token, ttl, meta, counterTTL, limit = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
local me = ARGV[6]
local counted = ARGV[7] == 'counted'
local attempt = nil
if counted then attempt = ARGV[8] end

if redis.call('EXISTS', lock) == 1 then
  return {0, redis.call('PTTL', lock)}
end
local now = nowMs()
local n = liveShares(shares, sinfo, slimit, now)
if n > 0 then
  local stored = tonumber(redis.call('GET', slimit) or '') or 0
  if stored ~= limit then
    return {2, stored}
  end
  local mine = redis.call('ZSCORE', shares, token)
  if mine then
    local d = shareInfo(redis.call('HGET', sinfo, token))
    if attempt and type(d.attempt) == 'string' and tonumber(d.attempt) > tonumber(attempt) then
      -- A late request of an older attempt changes nothing.
      return {0, math.max(tonumber(mine) - now, 1)}
    end
    local fence = d.fence
    if type(fence) ~= 'string' then
      fence = nextFence(counter, counterTTL, counted)
    end
    redis.call('ZADD', shares, now + ttl, token)
    redis.call('HSET', sinfo, token, cjson.encode({fence = fence, meta = meta, attempt = attempt}))
    expireShares(shares, sinfo, slimit, now)
    return {1, fence}
  end
end
if liveWriters(writers, now) > 0 then
  if n > 0 then
    return {0, soonest(shares, now)}
  end
  return {0, soonest(writers, now)}
end
if redis.call('EXISTS', queue) == 1 then
  local first, deadline = queueHead(queue, waits, now)
  if first and first ~= me then
    if n > 0 then
      return {0, soonest(shares, now)}
    end
    return {0, math.max(deadline - now, 1)}
  end
end
if limit > 0 and n >= limit then
  return {0, soonest(shares, now)}
end
local fence = nextFence(counter, counterTTL, counted)
redis.call('ZADD', shares, now + ttl, token)
redis.call('HSET', sinfo, token, cjson.encode({fence = fence, meta = meta, attempt = attempt}))
redis.call('SET', slimit, string.format('%d', limit))
expireShares(shares, sinfo, slimit, now)
return {1, fence}
