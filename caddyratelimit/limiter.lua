-- Tenantgate rate limiter: one organization's minute token bucket and UTC
-- daily quota, decided atomically in one round trip. Mirrors bucket.go.
--
-- KEYS[1]  minute bucket: "<micro-tokens held> <µs when last updated>"
-- KEYS[2]  daily counter: "<UTC day number> <requests admitted that day>"
--          (both keys carry the same {hash tag}, so they share a cluster slot)
-- ARGV[1]  per_minute (refill rate, tokens per 60 s)
-- ARGV[2]  capacity (per_minute + burst)
-- ARGV[3]  per_day
-- ARGV[4]  n: requests decided together (concurrent requests of one
--          organization coalesced by the gateway; 1 when absent)
--
-- Returns {admitted (0..n), micro-tokens after, used today after, now (µs)}.
-- The first `admitted` of the n requests are admitted, the rest denied.
-- The clock is Redis's own (TIME), so gateway clocks do not matter. A denied
-- request writes nothing; an admitted one takes one token and one daily
-- unit together. Keys expire once they hold nothing a fresh key would not:
-- the bucket when it would be full again, the counter after its day. Plain
-- strings with SET PX/EXAT keep it to four Redis calls.
-- Admitting k of n requests is the same as k sequential single admissions:
-- tokens and daily units are taken together, denials take nothing.

local rate = tonumber(ARGV[1])
local cap = tonumber(ARGV[2]) * 1000000
local per_day = tonumber(ARGV[3])
local n = tonumber(ARGV[4]) or 1

local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec * 1000000 + tonumber(t[2])
local day = math.floor(sec / 86400)

local function until_full(tokens)
  return math.ceil((cap - tokens) * 60 / rate)
end

local state = redis.call('MGET', KEYS[1], KEYS[2])

local tokens = cap
if state[1] then
  local held, ts = string.match(state[1], '^(%d+) (%d+)$')
  tokens = tonumber(held) or cap
  local elapsed = now - (tonumber(ts) or now)
  if tokens >= cap then
    tokens = cap
  elseif elapsed > 0 then
    if elapsed >= until_full(tokens) then
      tokens = cap
    else
      tokens = tokens + math.floor(elapsed * rate / 60)
    end
  end
end

local used = 0
if state[2] then
  local d, count = string.match(state[2], '^(%d+) (%d+)$')
  if tonumber(d) == day then
    used = tonumber(count)
  end
end

local admitted = math.min(n, math.floor(tokens / 1000000), per_day - used)
if admitted < 1 then
  return {0, tokens, used, now}
end

tokens = tokens - admitted * 1000000
used = used + admitted
redis.call('SET', KEYS[1], string.format('%d %d', tokens, now), 'PX', math.ceil(until_full(tokens) / 1000) + 1000)
redis.call('SET', KEYS[2], string.format('%d %d', day, used), 'EXAT', (day + 1) * 86400 + 60)
return {admitted, tokens, used, now}
