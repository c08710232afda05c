-- Shared by the scripts that grant or read a key's leases (prepended to
-- them, after queue.lua): the fence, and the key's shared grants beside
-- the lock key. The shared grants are a sorted set of their tokens by the
-- end of their lease on the server's clock in ms ("shares"), a hash of
-- token -> JSON {fence, meta, attempt} ("sinfo"), the limit they were
-- taken with ("slimit"), all three expiring with the last lease; the
-- waiting writers are a sorted set of tokens by the end of their record
-- ("writers"), expiring with the last record.

-- By default, a fence above both the last one granted for this key and the
-- server's clock in microseconds, so fences keep increasing even after the
-- counter expired or was lost, as long as the server clock does not go back.
-- When counted, the counter plus one while the counter exists (so servers
-- whose counters agree grant the same fence), and the clock only without a
-- counter.
local function nextFence(counter, counterTTL, counted)
  local last = tonumber(redis.call('GET', counter) or '')
  local fence
  if counted and last then
    fence = last + 1
  else
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    fence = math.max((last or 0) + 1, now)
  end
  fence = string.format('%d', fence)
  redis.call('SET', counter, fence, 'PX', counterTTL)
  return fence
end

-- Calls cmd on key with the members of list, a thousand at a time.
local function each(cmd, key, list)
  for i = 1, #list, 1000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 999, #list)))
  end
end

-- Sets the expiry of the share keys to the end of the last lease (they
-- are gone when no lease is left) and returns the number of leases.
local function expireShares(shares, sinfo, slimit, now)
  local last = redis.call('ZRANGE', shares, -1, -1, 'WITHSCORES')
  if #last == 0 then
    redis.call('DEL', sinfo, slimit)
    return 0
  end
  local ttl = math.max(tonumber(last[2]) - now, 1)
  redis.call('PEXPIRE', shares, ttl)
  redis.call('PEXPIRE', sinfo, ttl)
  redis.call('PEXPIRE', slimit, ttl)
  return redis.call('ZCARD', shares)
end

-- Drops the shared grants whose lease has ended and returns how many are
-- live (the share keys are gone when none is).
local function liveShares(shares, sinfo, slimit, now)
  if redis.call('EXISTS', shares) == 0 then
    redis.call('DEL', sinfo, slimit)
    return 0
  end
  local dead = redis.call('ZRANGEBYSCORE', shares, '-inf', now)
  if #dead > 0 then
    each('ZREM', shares, dead)
    each('HDEL', sinfo, dead)
  end
  return expireShares(shares, sinfo, slimit, now)
end

-- Drops the writer records that have ended, sets the key's expiry to the
-- last one's end, and returns how many are live.
local function liveWriters(writers, now)
  if redis.call('EXISTS', writers) == 0 then
    return 0
  end
  redis.call('ZREMRANGEBYSCORE', writers, '-inf', now)
  local last = redis.call('ZRANGE', writers, -1, -1, 'WITHSCORES')
  if #last == 0 then
    return 0
  end
  redis.call('PEXPIRE', writers, math.max(tonumber(last[2]) - now, 1))
  return redis.call('ZCARD', writers)
end

-- The ms left of the first member of a sorted set by end time (0 if none).
local function soonest(zset, now)
  local first = redis.call('ZRANGE', zset, 0, 0, 'WITHSCORES')
  if #first == 0 then
    return 0
  end
  return math.max(tonumber(first[2]) - now, 1)
end

-- Decodes a share's info (a table, possibly empty).
local function shareInfo(raw)
  if raw then
    local ok, d = pcall(cjson.decode, raw)
    if ok and type(d) == 'table' then
      return d
    end
  end
  return {}
end

-- What Inspect reports of the live shared grants, without changing them:
-- {pttl (longest), fence and metadata and token of the newest}, or nil
-- when there is none.
local function sharesSummary(shares, sinfo, now)
  if redis.call('EXISTS', shares) == 0 then
    return nil
  end
  local live = redis.call('ZRANGEBYSCORE', shares, '(' .. now, '+inf', 'WITHSCORES')
  if #live == 0 then
    return nil
  end
  local tokens = {}
  for i = 1, #live, 2 do
    tokens[#tokens + 1] = live[i]
  end
  local raws = redis.call('HMGET', sinfo, unpack(tokens))
  local best, bestFence, meta = '', -1, ''
  for i, token in ipairs(tokens) do
    local d = shareInfo(raws[i])
    local f = tonumber(d.fence or '') or 0
    if f > bestFence then
      best, bestFence = token, f
      meta = type(d.meta) == 'string' and d.meta or ''
    end
  end
  return {tonumber(live[#live]) - now, string.format('%d', bestFence), meta, best}
end
