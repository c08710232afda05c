-- One acquisition attempt, in one round trip.
-- KEYS[1] lock key, KEYS[2] fence counter, KEYS[3] info key (same slot)
-- ARGV[1] owner token, ARGV[2] TTL in ms, ARGV[3] metadata, ARGV[4] counter TTL in ms,
-- ARGV[5] (optional) 'counted': see nextFence; then ARGV[6] is the attempt
-- number, recorded in the info key (see below)
-- Returns {1, fence} when granted (fence as a decimal string),
-- or {0, pttl} when another owner holds the key (pttl -1: no expiry).
local lock, counter, info = KEYS[1], KEYS[2], KEYS[3]
local token, ttl, meta, counterTTL = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local counted = ARGV[5] == 'counted'
local attempt = nil
if counted then attempt = ARGV[6] end

-- By default, a fence above both the last one granted for this key and the
-- server's clock in microseconds, so fences keep increasing even after the
-- counter expired or was lost, as long as the server clock does not go back.
-- When counted, the counter plus one while the counter exists (so servers
-- whose counters agree grant the same fence), and the clock only without a
-- counter.
local function nextFence()
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

local function writeInfo(fence)
  redis.call('SET', info, cjson.encode({fence = fence, token = token, meta = meta, attempt = attempt}), 'PX', ttl)
end

local held = redis.pcall('GET', lock)
if held == false then
  local fence = nextFence()
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
    fence = nextFence()
  end
  writeInfo(fence)
  return {1, fence}
end
-- Held by another owner (or the key holds something that is not a lock).
return {0, redis.call('PTTL', lock)}
