-- Frees the lock, or a shared grant, if the token owns it and announces the
-- release.
-- KEYS[1] lock key, KEYS[2] info key, KEYS[3] waiting queue, KEYS[4]
-- waiters' deadlines, KEYS[5] shares, KEYS[6] sinfo, KEYS[7] slimit,
-- KEYS[8] writers (same slot; see grants.lua); ARGV[1] owner token,
-- ARGV[2] release channel, or '' to free the lock without announcing it;
-- ARGV[3] an attempt number, or '': free the lock only if that counted
-- attempt took it (see acquire.lua).
-- Without an attempt number it also removes the token's record as a
-- waiting writer, announcing that as a release (readers it held back may
-- go) but returning 0 unless the token also held a grant.
-- The wake-up names whom the release is for (see announce): the first live
-- waiter of the queue, or the shared waiters at its head, as many as
-- permits are free, so that no other queued client tries in vain; it is
-- empty (everyone may try) when the queue is empty.
-- Returns 1 when released, 0 when the token does not own the lock.
local lock, info, queue, waits = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local shares, sinfo, slimit, writers = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local token, channel, attempt = ARGV[1], ARGV[2], ARGV[3]
if attempt == '' then attempt = nil end

local held = redis.pcall('GET', lock)
if held == token then
  if attempt then
    local raw = redis.call('GET', info)
    if not raw then return 0 end
    local ok, d = pcall(cjson.decode, raw)
    if not (ok and type(d) == 'table' and d.token == token and d.attempt == attempt) then
      return 0
    end
  end
  redis.call('DEL', lock, info)
  announce(channel, queue, waits)
  return 1
end
local now, freed, writer, free, writersLive = nil, false, false, nil, nil
if redis.call('EXISTS', shares) == 1 then
  now = nowMs()
  local score = redis.call('ZSCORE', shares, token)
  if score then
    local d = shareInfo(redis.call('HGET', sinfo, token))
    if attempt and d.attempt ~= attempt then
      return 0
    end
    freed = tonumber(score) > now
    local limit = tonumber(redis.call('GET', slimit) or '') or 0
    redis.call('ZREM', shares, token)
    redis.call('HDEL', sinfo, token)
    local left = liveShares(shares, sinfo, slimit, now)
    if limit > 0 then
      -- Wake as many shared waiters as permits are free.
      free = limit - left
    end
  end
end
if not attempt and redis.call('EXISTS', writers) == 1 then
  now = now or nowMs()
  writer = redis.call('ZSCORE', writers, token)
  writer = writer and tonumber(writer) > now
  redis.call('ZREM', writers, token)
  writersLive = liveWriters(writers, now) > 0
end
if freed or writer then
  if writersLive == nil then
    writersLive = liveWriters(writers, now or nowMs()) > 0
  end
  announce(channel, queue, waits, free, writersLive)
end
if freed then return 1 end
return 0
