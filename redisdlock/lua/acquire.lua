-- One acquisition attempt, in one round trip.
-- KEYS[1] lock key, KEYS[2] fence counter, KEYS[3] info key (same slot)
-- ARGV[1] owner token, ARGV[2] TTL in ms, ARGV[3] metadata, ARGV[4] counter TTL in ms
-- Returns {1, fence} when granted (fence as a decimal string),
-- or {0, pttl} when another owner holds the key (pttl -1: no expiry).
local lock, counter, info = KEYS[1], KEYS[2], KEYS[3]
local token, ttl, meta, counterTTL = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

-- A fence above both the last one granted for this key and the server's
-- clock in microseconds, so fences keep increasing even after the counter
-- expired or was lost, as long as the server clock does not go back.
local function nextFence()
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local last = tonumber(redis.call('GET', counter) or '0') or 0
  local fence = string.format('%d', math.max(last + 1, now))
  redis.call('SET', counter, fence, 'PX', counterTTL)
  return fence
end

local function writeInfo(fence)
  redis.call('SET', info, cjson.encode({fence = fence, token = token, meta = meta}), 'PX', ttl)
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
  redis.call('PEXPIRE', lock, ttl)
  local fence
  local raw = redis.call('GET', info)
  if raw then
    local ok, d = pcall(cjson.decode, raw)
    if ok and type(d) == 'table' and d.token == token and type(d.fence) == 'string' then
      fence = d.fence
    end
  end
  if not fence then
    fence = nextFence()
  end
  writeInfo(fence)
  return {1, fence}
end
-- Held by another owner (or the key holds something that is not a lock).
return {0, redis.call('PTTL', lock)}
