-- Reports a key's live grants without changing them.
-- KEYS[1] lock key, KEYS[2] info key, KEYS[3] shares, KEYS[4] sinfo,
-- KEYS[5] slimit, KEYS[6] writers (same slot; see grants.lua)
-- Returns {exclusive, shared, limit, writers}: exclusive is {} or {pttl,
-- fence, metadata, token} of the lock's holder (fence '0' and no metadata
-- for a holder that is not a dlock client); shared is {token, pttl, fence,
-- metadata, ...} of every live shared grant; limit is the stored limit
-- ('0' without shared grants), writers the number of live writer records.
local now = nowMs()
local excl = {}
local v = redis.pcall('GET', KEYS[1])
if v ~= false then
  local pttl = redis.call('PTTL', KEYS[1])
  local fence, meta, token = '0', '', ''
  if type(v) == 'string' then
    token = v
    local raw = redis.call('GET', KEYS[2])
    if raw then
      local ok, d = pcall(cjson.decode, raw)
      if ok and type(d) == 'table' and d.token == v and type(d.fence) == 'string' then
        fence = d.fence
        if type(d.meta) == 'string' then meta = d.meta end
      end
    end
  end
  excl = {pttl, fence, meta, token}
end
local shared, limit = {}, '0'
local live = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. now, '+inf', 'WITHSCORES')
if #live > 0 then
  local tokens = {}
  for i = 1, #live, 2 do
    tokens[#tokens + 1] = live[i]
  end
  local raws = redis.call('HMGET', KEYS[4], unpack(tokens))
  for i, token in ipairs(tokens) do
    local d = shareInfo(raws[i])
    local fence = type(d.fence) == 'string' and d.fence or '0'
    local meta = type(d.meta) == 'string' and d.meta or ''
    shared[#shared + 1] = token
    shared[#shared + 1] = tonumber(live[2 * i]) - now
    shared[#shared + 1] = fence
    shared[#shared + 1] = meta
  end
  limit = redis.call('GET', KEYS[5]) or '0'
end
local writers = redis.call('ZCOUNT', KEYS[6], '(' .. now, '+inf')
return {excl, shared, limit, writers}
