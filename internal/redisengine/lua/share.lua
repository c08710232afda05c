-- One attempt at a shared grant of a key, in one round trip.
-- KEYS[1] lock key, KEYS[2] fence counter, KEYS[3] shares, KEYS[4] sinfo,
-- KEYS[5] slimit, KEYS[6] writers, KEYS[7] waiting queue, KEYS[8]
-- waiters' deadlines (same slot; see grants.lua)
-- ARGV[1] owner token, ARGV[2] TTL in ms, ARGV[3] metadata, ARGV[4] counter
-- TTL in ms, ARGV[5] the limit (0: none), ARGV[6] the client's waiter id,
-- ARGV[7] 'counted' for a counted attempt (see acquire.lua) and ARGV[8] its
-- attempt number; ARGV[9] '1' when the client waits for the key (it joins
-- the queue as a shared waiter if this attempt fails) and ARGV[10] how long
-- a queue entry lives without a new attempt, in ms.
--
-- Granted while the lock key does not exist and fewer than the limit of
-- shared grants are live, in the queue's order: an uncounted attempt is
-- granted only when no exclusive waiter's entry is before its client's
-- entry (or before the queue's end, for a client not queued) and fewer
-- entries are there than permits are free. A live writer record holds back
-- every attempt (writer preference; the writer skips the shared waiters
-- before it in the queue, see acquire.lua). A counted attempt (Redlock:
-- a quorum of servers need not agree on who is first) never joins the
-- queue, and is refused while a writer record is live or another client
-- is first in the queue. A token that has a live grant renews it, keeping
-- its fence.
-- Returns {1, fence} when granted, {0, ms} when not (what stands in the
-- way ends in ms: the lock's PTTL, -1 without expiry, the first shared
-- grant's or writer record's end, the queued waiter's entry's end), or
-- {2, limit} when the live grants were taken with another limit.
local lock, counter, shares, sinfo, slimit, writers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local queue, waits = KEYS[7], KEYS[8]
local token, ttl, meta, counterTTL, limit = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
local me = ARGV[6]
local counted = ARGV[7] == 'counted'
local attempt = nil
if counted then attempt = ARGV[8] end
local joins, entryTTL = ARGV[9] == '1' and not counted, tonumber(ARGV[10])
local entry = me .. '*'

-- Joins the queue when the attempt is refused: as a shared waiter, unless
-- the client waits there for the lock already (its writer keeps the place).
local function refuse(ms, now)
  if joins then
    local kind = entry
    if redis.call('ZSCORE', queue, me) then kind = me end
    joinQueue(queue, waits, me, kind, now or nowMs(), entryTTL)
  end
  return {0, ms}
end

if redis.call('EXISTS', lock) == 1 then
  return refuse(redis.call('PTTL', lock))
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
-- What keeps a refused attempt waiting: the first shared grant's end while
-- there are grants, else the given time.
local function waitFor(ms)
  if n > 0 then
    return soonest(shares, now)
  end
  return ms
end
if limit > 0 and n >= limit then
  return refuse(soonest(shares, now), now)
end
if redis.call('EXISTS', queue) == 1 then
  local first, deadline = queueHead(queue, waits, now)
  if first and counted then
    if first ~= me then
      return {0, waitFor(math.max(deadline - now, 1))}
    end
  elseif first then
    -- (ZRANK of a missing member is false.)
    local rank = redis.call('ZRANK', queue, entry) or redis.call('ZRANK', queue, me)
    if rank == false then
      rank = redis.call('ZCARD', queue)
    end
    if rank > 0 then
      if limit > 0 and rank >= limit - n then
        return refuse(waitFor(math.max(deadline - now, 1)), now)
      end
      for _, e in ipairs(redis.call('ZRANGE', queue, 0, rank - 1)) do
        if not entryOf(e) then
          -- An exclusive waiter comes first.
          return refuse(waitFor(math.max(deadline - now, 1)), now)
        end
      end
    end
  end
end
if liveWriters(writers, now) > 0 then
  if n > 0 then
    return refuse(soonest(shares, now), now)
  end
  return refuse(soonest(writers, now), now)
end
if redis.call('ZREM', queue, entry) == 1 then
  -- Granted here: no longer waiting here.
  redis.call('ZREM', waits, entry)
end
local fence = nextFence(counter, counterTTL, counted)
redis.call('ZADD', shares, now + ttl, token)
redis.call('HSET', sinfo, token, cjson.encode({fence = fence, meta = meta, attempt = attempt}))
redis.call('SET', slimit, string.format('%d', limit))
expireShares(shares, sinfo, slimit, now)
return {1, fence}
