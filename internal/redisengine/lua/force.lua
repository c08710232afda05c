-- Frees a lock, or every shared grant of the key, whoever holds it, and
-- announces the release as release.lua does, keeping the fence counter; the
-- key's waiting writers go too.
-- KEYS[1] lock key, KEYS[2] info key, KEYS[3] fence counter, KEYS[4]
-- waiting queue, KEYS[5] waiters' deadlines, KEYS[6] shares, KEYS[7]
-- sinfo, KEYS[8] slimit, KEYS[9] writers (same slot; see grants.lua);
-- ARGV[1] release channel; ARGV[2] (optional) a token: free the lock only
-- if it holds that token, or the shared grants only if that token has one
-- of them.
-- Returns what inspect.lua would have returned just before: {state, pttl,
-- fence, metadata, holder's token, live queued waiters}, where state is 0
-- when the key was free (nothing is changed but the writer records), 1
-- when a lock or the shared grants were freed, 2 when the key holds
-- something that is not a lock: neither a dlock holder's token (named by
-- the info key) nor a string with an expiry (a lock of another library,
-- such as SET NX PX), and 3 when it holds another token than ARGV[2]. In
-- states 2 and 3 the key is left alone. For shared grants the report is
-- that of inspect.lua: the longest pttl, the newest grant's fence,
-- metadata and token.
local waiting = redis.call('ZCOUNT', KEYS[5], '(' .. nowMs(), '+inf')
local v = redis.pcall('GET', KEYS[1])
if v == false then
  local now = nowMs()
  local sh = sharesSummary(KEYS[6], KEYS[7], now)
  if sh then
    local s = ARGV[2] and redis.call('ZSCORE', KEYS[6], ARGV[2])
    if ARGV[2] and not (s and tonumber(s) > now) then
      return {3, sh[1], '0', '', '', waiting}
    end
    redis.call('DEL', KEYS[6], KEYS[7], KEYS[8], KEYS[9])
    announce(ARGV[1], KEYS[4], KEYS[5], nil, false)
    return {1, sh[1], sh[2], sh[3], sh[4], waiting}
  end
  if not ARGV[2] then
    redis.call('DEL', KEYS[9])
  end
  local last = redis.call('GET', KEYS[3])
  if not last or not tonumber(last) then last = '0' end
  return {0, 0, last, '', '', waiting}
end
local pttl = redis.call('PTTL', KEYS[1])
if type(v) ~= 'string' then
  return {2, pttl, '0', '', '', waiting}
end
if ARGV[2] and v ~= ARGV[2] then
  return {3, pttl, '0', '', '', waiting}
end
local fence, meta = '0', ''
local raw = redis.call('GET', KEYS[2])
if raw then
  local ok, d = pcall(cjson.decode, raw)
  if ok and type(d) == 'table' and d.token == v and type(d.fence) == 'string' then
    fence = d.fence
    if type(d.meta) == 'string' then meta = d.meta end
  end
end
if fence == '0' and pttl < 0 then
  return {2, pttl, '0', '', '', waiting}
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[9])
announce(ARGV[1], KEYS[4], KEYS[5], nil, false)
return {1, pttl, fence, meta, v, waiting}
