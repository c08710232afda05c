-- One all-or-nothing attempt at several keys, in one round trip.
-- KEYS: nine per key, in the order of acquire.lua's KEYS[1..9] (lock key,
-- fence counter, info, waiting queue, waiters' deadlines, shares, sinfo,
-- slimit, writers), key after key (all in one slot on a Cluster).
-- ARGV[1] TTL in ms, ARGV[2] counter TTL in ms, ARGV[3] '' or, for a
-- counted attempt (see acquire.lua), the attempt number; then two per key:
-- owner token and metadata.
-- Every key must be free (no lock, no live shared grant, no live waiter in
-- its queue) or already held by its request's token; then each is granted
-- as acquire.lua grants it (a token that holds the key renews it, keeping
-- its fence), else none is and nothing changes but the queues' and shares'
-- expired entries.
-- Returns {1, fence...} when granted, or {0, ms...} when not: for each key,
-- how long what stood in the way has left (the holder's PTTL, -1 with no
-- expiry; the first live shared grant's or queue entry's end), or -2 for a
-- key that did not stand in the way.
local ttl, counterTTL = ARGV[1], ARGV[2]
local counted = ARGV[3] ~= ''
local attempt = nil
if counted then attempt = ARGV[3] end
local n = #KEYS / 9

-- The state of the key at base (its KEYS offset): 'free', 'mine' (with
-- the fence to keep, or nil) or 'busy' with the ms left.
local function judge(base, token)
  local lock, info, queue, waits = KEYS[base + 1], KEYS[base + 3], KEYS[base + 4], KEYS[base + 5]
  local shares, sinfo, slimit = KEYS[base + 6], KEYS[base + 7], KEYS[base + 8]
  local held = redis.pcall('GET', lock)
  if held == false then
    if redis.call('EXISTS', queue) == 1 then
      local now = nowMs()
      local first, deadline = queueHead(queue, waits, now)
      if first then
        return 'busy', math.max(deadline - now, 1)
      end
    end
    if redis.call('EXISTS', shares) == 1 then
      local now = nowMs()
      if liveShares(shares, sinfo, slimit, now) > 0 then
        return 'busy', soonest(shares, now)
      end
    end
    return 'free'
  end
  if held == token then
    local raw = redis.call('GET', info)
    if raw then
      local ok, d = pcall(cjson.decode, raw)
      if ok and type(d) == 'table' and d.token == token then
        if attempt and type(d.attempt) == 'string' and tonumber(d.attempt) > tonumber(attempt) then
          return 'busy', redis.call('PTTL', lock)
        end
        if type(d.fence) == 'string' then
          return 'mine', d.fence
        end
      end
    end
    return 'mine'
  end
  return 'busy', redis.call('PTTL', lock)
end

local states, kept, left = {}, {}, {}
local refused = false
for i = 1, n do
  local st, v = judge((i - 1) * 9, ARGV[2 + 2 * i])
  states[i] = st
  if st == 'busy' then
    refused = true
    left[i] = v
  else
    left[i] = -2
    kept[i] = v
  end
end
if refused then
  local res = {0}
  for i = 1, n do res[i + 1] = left[i] end
  return res
end
local res = {1}
for i = 1, n do
  local base = (i - 1) * 9
  local lock, counter, info = KEYS[base + 1], KEYS[base + 2], KEYS[base + 3]
  local queue, waits, writers = KEYS[base + 4], KEYS[base + 5], KEYS[base + 9]
  local token, meta = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  local fence
  if states[i] == 'mine' then
    redis.call('PEXPIRE', lock, ttl)
    fence = kept[i]
  else
    if redis.call('EXISTS', writers) == 1 then
      redis.call('ZREM', writers, token)
    end
    redis.call('SET', lock, token, 'PX', ttl)
  end
  if not fence then
    fence = nextFence(counter, counterTTL, counted)
  end
  redis.call('SET', info, cjson.encode({fence = fence, token = token, meta = meta, attempt = attempt}), 'PX', ttl)
  res[i + 1] = fence
end
return res
