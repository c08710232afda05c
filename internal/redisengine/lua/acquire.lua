-- One acquisition attempt, in one round trip.
-- KEYS[1] lock key, KEYS[2] fence counter, KEYS[3] info key, KEYS[4]
-- waiting queue, KEYS[5] waiters' deadlines, KEYS[6] shares, KEYS[7] sinfo,
-- KEYS[8] slimit, KEYS[9] writers (same slot; see grants.lua)
-- ARGV[1] owner token, ARGV[2] TTL in ms, ARGV[3] metadata, ARGV[4] counter TTL in ms,
-- then, for a counted attempt (see nextFence and below), ARGV[5] 'counted'
-- and ARGV[6] the attempt number, recorded in the info key; then, with the
-- queue keys, four more: the client's waiter id, '1' when the client waits
-- for the key (it joins the queue if this attempt fails), how long a
-- queue entry lives without a new attempt, in ms, and '1' when the caller
-- waits for the key (driver.Hints.Wait): refused because of live shared
-- grants, it is then recorded as a waiting writer for the TTL.
-- The key is refused while it has live shared grants.
-- A free key is kept for the first live waiter in the queue, except from
-- counted attempts: a quorum of servers need not agree on who is first, so
-- there the queue only decides whom a release wakes.
-- Returns {1, fence} when granted (fence as a decimal string),
-- or {0, ms} when not: the holder's PTTL (-1: no expiry), or, when the key
-- is free but kept for the first waiter in the queue, how long that
-- waiter's entry has left, or, when shared grants hold it, how long the
-- first of them has left; {0, ms, 1} when the caller was recorded as a
-- waiting writer.
local lock, counter, info = KEYS[1], KEYS[2], KEYS[3]
local token, ttl, meta, counterTTL = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local counted = ARGV[5] == 'counted'
local attempt = nil
local q = 5
if counted then
  attempt = ARGV[6]
  q = 7
end
local queue, waits = KEYS[4], KEYS[5]
local me, joins, entryTTL = ARGV[q], ARGV[q + 1] == '1', tonumber(ARGV[q + 2])
local writerWaits = ARGV[q + 3] == '1'
local shares, sinfo, slimit, writers = KEYS[6], KEYS[7], KEYS[8], KEYS[9]

local function join(now)
  joinQueue(queue, waits, me, me, now, entryTTL)
end

local function writeInfo(fence)
  redis.call('SET', info, cjson.encode({fence = fence, token = token, meta = meta, attempt = attempt}), 'PX', ttl)
end

local held = redis.pcall('GET', lock)
if held == false then
  local queued = redis.call('EXISTS', queue) == 1
  local first
  if queued and not counted then
    -- Waiters are queued: the key goes to the first of them. A writer
    -- recorded as waiting for shared grants passes the shared waiters
    -- before it, which its record holds back (writer preference).
    local now = nowMs()
    local deadline
    first, deadline = queueHead(queue, waits, now)
    if first and first ~= me and entryOf(first) and liveWriters(writers, now) > 0 then
      local mine = redis.call('ZSCORE', writers, token)
      if mine and tonumber(mine) > now then
        first = firstExclusive(queue)
        if first then deadline = tonumber(redis.call('ZSCORE', waits, first)) end
      end
    end
    if first and first ~= me then
      if joins then join(now) end
      return {0, deadline - now}
    end
  end
  if redis.call('EXISTS', shares) == 1 then
    local now = nowMs()
    if liveShares(shares, sinfo, slimit, now) > 0 then
      -- Held by shared grants: wait for them, and hold new ones back.
      local res = {0, soonest(shares, now)}
      if writerWaits then
        redis.call('ZADD', writers, now + tonumber(ttl), token)
        liveWriters(writers, now)
        res[3] = 1
      end
      if joins then join(now) end
      return res
    end
  end
  if queued and (counted or first) then
    -- Granted here: no longer waiting here.
    if redis.call('ZREM', queue, me) == 1 then
      redis.call('ZREM', waits, me)
    end
  end
  if redis.call('EXISTS', writers) == 1 then
    redis.call('ZREM', writers, token)
  end
  local fence = nextFence(counter, counterTTL, counted)
  redis.call('SET', lock, token, 'PX', ttl)
  writeInfo(fence)
  return {1, fence}
end
if held == token then
  -- The same owner again: keep the fence, set the new TTL.
  local fence
  local raw = redis.call('GET', info)
  if raw then
    local ok, d = pcall(cjson.decode, raw)
    if ok and type(d) == 'table' and d.token == token then
      if type(d.fence) == 'string' then
        fence = d.fence
      end
      -- A counted attempt older than the one that holds the key (a
      -- request that arrived late) changes nothing: a give-back of that
      -- attempt must not free the newer one's hold.
      if attempt and type(d.attempt) == 'string' and tonumber(d.attempt) > tonumber(attempt) then
        return {0, redis.call('PTTL', lock)}
      end
    end
  end
  redis.call('PEXPIRE', lock, ttl)
  if not fence then
    fence = nextFence(counter, counterTTL, counted)
  end
  writeInfo(fence)
  return {1, fence}
end
-- Held by another owner (or the key holds something that is not a lock).
if joins then join(nowMs()) end
return {0, redis.call('PTTL', lock)}
