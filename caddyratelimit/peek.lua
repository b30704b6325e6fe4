-- Tenantgate rate limiter, read only: one organization's state as
-- limiter.lua keeps it, and Redis's clock, in one round trip. It writes
-- nothing, so reading the state never consumes a token.
--
-- KEYS[1]  minute bucket ("<micro-tokens held> <µs when last updated>")
-- KEYS[2]  daily counter ("<UTC day number> <requests admitted that day>")
--
-- Returns {bucket or "", counter or "", now (µs)}.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('MGET', KEYS[1], KEYS[2])
return {state[1] or '', state[2] or '', now}
