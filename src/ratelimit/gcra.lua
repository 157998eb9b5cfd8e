-- GCRA for a batch: grants up to ARGV[3] requests at once to the key
-- KEYS[1] (its TAT, microseconds on this server's clock), after giving
-- back ARGV[4] requests leased earlier and not spent.
-- ARGV[1]: the interval T, ARGV[2]: the tolerance (burst x T), in us.
-- Returns {granted, TAT - now after the grant}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local refund = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
if refund > 0 then tat = math.max(now, tat - refund * interval) end
-- The k-th request more (k = 0, 1...) conforms while
-- tat + k * T - now <= tolerance.
local room = math.floor((tolerance - (tat - now)) / interval) + 1
if room < 0 then room = 0 end
local n = math.min(want, room)
tat = tat + n * interval
if n > 0 or refund > 0 then
  -- Kept until it is in the past: then it counts as none.
  local ttl = math.ceil((tat - now) / 1000) + 1
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', string.format('%.0f', ttl))
end
return {n, tat - now}
