-- Shared by the scripts that use a key's waiting queue (prepended to them):
-- a sorted set of waiting clients' entries by arrival, beside a sorted set
-- of their deadlines on the server's clock in ms. A client has at most one
-- entry per key: its waiter id when it waits for the lock (exclusive), or
-- the id followed by '*' when it waits for a shared grant.

-- The server's clock in milliseconds.
local function nowMs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Whether a queue entry is a shared waiter's, and the client it names.
local function entryOf(e)
  if string.sub(e, -1) == '*' then
    return true, string.sub(e, 1, -2)
  end
  return false, e
end

-- Drops the queue's entries whose deadline has passed (waiters that went
-- away).
local function dropDead(queue, waits, now)
  local dead = redis.call('ZRANGEBYSCORE', waits, '-inf', now, 'LIMIT', 0, 100)
  if #dead > 0 then
    redis.call('ZREM', queue, unpack(dead))
    redis.call('ZREM', waits, unpack(dead))
  end
end

-- The first live entry of the queue and its deadline (nil, nil when none),
-- after dropping dead entries.
local function queueHead(queue, waits, now)
  dropDead(queue, waits, now)
  local first = redis.call('ZRANGE', queue, 0, 0)[1]
  if first then
    return first, tonumber(redis.call('ZSCORE', waits, first))
  end
  return nil, nil
end

-- Puts client me in the queue as entry (me, or me..'*' for a shared
-- waiter) with a fresh deadline, keeping its place when it is there
-- already, under either kind. A new entry goes after every entry there,
-- even one that joined within the same millisecond (equal scores would
-- order by id, and a newcomer could then overtake the waiter a release
-- just named).
local function joinQueue(queue, waits, me, entry, now, entryTTL)
  local other = me .. '*'
  if entry == other then other = me end
  local place = redis.call('ZSCORE', queue, other)
  if place then
    -- The client's other kind of waiter was here: the entry changes kind.
    redis.call('ZREM', queue, other)
    redis.call('ZREM', waits, other)
    redis.call('ZADD', queue, place, entry)
  elseif not redis.call('ZSCORE', queue, entry) then
    place = now
    local last = tonumber(redis.call('ZRANGE', queue, -1, -1, 'WITHSCORES')[2])
    if last and last >= place then
      place = last + 1
    end
    redis.call('ZADD', queue, place, entry)
  end
  redis.call('ZADD', waits, now + entryTTL, entry)
  redis.call('PEXPIRE', queue, entryTTL)
  redis.call('PEXPIRE', waits, entryTTL)
end

-- The queue's first exclusive waiter's entry (nil when none), among its
-- first 1000 entries.
local function firstExclusive(queue)
  for _, e in ipairs(redis.call('ZRANGE', queue, 0, 999)) do
    if not entryOf(e) then
      return e
    end
  end
  return nil
end

-- The most clients one announcement names.
local maxNamed = 32

-- Announces a release (or a change watchers should look at) on channel,
-- naming whom it is for, so that no other queued waiter tries in vain:
-- the queue's first live entry when it is an exclusive waiter's; else its
-- first shared waiters up to the next exclusive one, at most free of them
-- (nil: no bound but maxNamed), and, when writers (nil or true) says a
-- writer is recorded as waiting, the first exclusive waiter too (the
-- writer passes shared waiters, see acquire.lua); separated by spaces. ''
-- when the queue is empty: everyone may try. Nothing when channel is ''.
local function announce(channel, queue, waits, free, writers)
  if channel == '' then
    return
  end
  local named = {}
  if redis.call('EXISTS', queue) == 1 then
    dropDead(queue, waits, nowMs())
    local head = redis.call('ZRANGE', queue, 0, 0)
    if #head == 1 and entryOf(head[1]) then
      -- Shared waiters first: read as many as may be named.
      local n = maxNamed
      if free then n = math.max(math.min(free, maxNamed), 1) end
      if n > 1 then head = redis.call('ZRANGE', queue, 0, n - 1) end
    end
    for i, e in ipairs(head) do
      local shared, id = entryOf(e)
      if not shared then
        if i == 1 then named[1] = id end
        break
      end
      named[#named + 1] = id
    end
    if writers ~= false and #head > 0 and entryOf(head[1]) then
      local x = firstExclusive(queue)
      if x then named[#named + 1] = x end
    end
  end
  redis.call('PUBLISH', channel, table.concat(named, ' '))
end
