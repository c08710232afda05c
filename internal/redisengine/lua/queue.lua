-- Shared by the scripts that use a key's waiting queue (prepended to them):
-- a sorted set of waiting clients' ids by arrival, beside a sorted set of
-- their entries' deadlines on the server's clock in ms.

-- The server's clock in milliseconds.
local function nowMs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The first live waiter of the queue and its deadline (nil, nil when none),
-- after dropping entries whose deadline has passed (waiters that went away).
local function queueHead(queue, waits, now)
  local dead = redis.call('ZRANGEBYSCORE', waits, '-inf', now, 'LIMIT', 0, 100)
  if #dead > 0 then
    redis.call('ZREM', queue, unpack(dead))
    redis.call('ZREM', waits, unpack(dead))
  end
  local first = redis.call('ZRANGE', queue, 0, 0)[1]
  if first then
    return first, tonumber(redis.call('ZSCORE', waits, first))
  end
  return nil, nil
end

-- Announces a release (or a change watchers should look at) on channel,
-- naming the queue's first live waiter ('' when none: everyone may try),
-- so that no other exclusive waiter tries in vain. Nothing when channel
-- is ''.
local function announce(channel, queue, waits)
  if channel == '' then
    return
  end
  local first = ''
  if redis.call('EXISTS', queue) == 1 then
    first = queueHead(queue, waits, nowMs()) or ''
  end
  redis.call('PUBLISH', channel, first)
end
