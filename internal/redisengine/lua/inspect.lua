-- Reports a lock's state without changing it.
-- KEYS[1] lock key, KEYS[2] info key, KEYS[3] fence counter, KEYS[4] the
-- waiters' deadlines, KEYS[5] shares, KEYS[6] sinfo (same slot; see
-- grants.lua)
-- A key with live shared grants is reported held, with the longest pttl
-- among them, and the fence, metadata and token of the newest.
-- Returns {held (0/1), pttl, fence (decimal string), metadata, holder's
-- token, live queued waiters}, and for a dlock holder a seventh element:
-- '1' when its fence was recorded by a second round (fence.lua), else ''.
-- When the key is free, fence is the last one granted (or '0') and the token
-- ''. When the holder is not a dlock client (a plain SET NX), fence is '0'
-- and metadata empty; the token is the key's value ('' if not a string).
local waiting = redis.call('ZCOUNT', KEYS[4], '(' .. nowMs(), '+inf')
local v = redis.pcall('GET', KEYS[1])
if v == false then
  local sh = sharesSummary(KEYS[5], KEYS[6], nowMs())
  if sh then
    return {1, sh[1], sh[2], sh[3], sh[4], waiting}
  end
  local last = redis.call('GET', KEYS[3])
  if not last or not tonumber(last) then last = '0' end
  return {0, 0, last, '', '', waiting}
end
local pttl = redis.call('PTTL', KEYS[1])
if type(v) == 'string' then
  local raw = redis.call('GET', KEYS[2])
  if raw then
    local ok, d = pcall(cjson.decode, raw)
    if ok and type(d) == 'table' and d.token == v and type(d.fence) == 'string' then
      local meta = d.meta
      if type(meta) ~= 'string' then meta = '' end
      local rec = ''
      if d.rec then rec = '1' end
      return {1, pttl, d.fence, meta, v, waiting, rec}
    end
  end
  return {1, pttl, '0', '', v, waiting}
end
return {1, pttl, '0', '', '', waiting}
