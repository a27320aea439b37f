/**
 * The Lua scripts the Redis store runs (src/shared/redis-store.ts). Redis runs a script whole,
 * with no other command in between, which is what makes "count, then take" atomic across
 * instances. Times are Redis's own clock (TIME), so instances on machines whose clocks differ
 * still agree on who is alive and how full a bucket is.
 */

/** Milliseconds by Redis's clock. */
const NOW = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/**
 * Takes one slot of every claim, all or none. KEYS[1]: the instances' heartbeat set; KEYS[2..]:
 * one hash per counter, field = instance, value = slots it holds. ARGV: instance, how long an
 * instance stays alive without a heartbeat (ms), then one limit per counter (-1: uncapped).
 * Slots of instances gone quiet are dropped as they are met. Returns 0, or the 1-based index of
 * the first full counter.
 */
export const TAKE = `${NOW}
local me = ARGV[1]
local alive = now - tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, me)
for i = 2, #KEYS do
  local limit = tonumber(ARGV[i + 1])
  local held = redis.call('HGETALL', KEYS[i])
  local sum = 0
  for j = 1, #held, 2 do
    local seen = redis.call('ZSCORE', KEYS[1], held[j])
    if seen and tonumber(seen) >= alive then
      sum = sum + tonumber(held[j + 1])
    else
      redis.call('HDEL', KEYS[i], held[j])
    end
  end
  if limit >= 0 and sum >= limit then return i - 1 end
end
for i = 2, #KEYS do redis.call('HINCRBY', KEYS[i], me, 1) end
return 0`;

/** Gives back one slot of KEYS[1] held by instance ARGV[1]. */
export const RELEASE = `local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return n`;

/**
 * The heartbeat: KEYS[1] the instances' set, ARGV[1] this instance, ARGV[2] how long since an
 * instance's last beat it is forgotten (ms). Returns how long ago this instance's previous beat
 * was (ms), or -1 when Redis did not know it (restarted, or it had forgotten it): the caller
 * then writes its slots again.
 */
export const HEARTBEAT = `${NOW}
local prev = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
if not prev then return -1 end
return now - tonumber(prev)`;

/**
 * Takes ARGV[3] bytes from the token bucket KEYS[1] (ARGV[1] bytes a second, ARGV[2] at most),
 * going into debt if it has not got them. Returns how long (ms) until the debt is paid: the
 * caller uses the bytes only then.
 */
export const TOKENS = `${NOW}
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate / 1000) end
tokens = tokens - tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(math.max(now, ts)))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 60000)
if tokens >= 0 then return 0 end
return math.ceil(-tokens * 1000 / rate)`;

/** A client group's failed logins KEYS[1]: {failures, ms until its next attempt may be checked}. */
export const FAILURES = `${NOW}
local f = redis.call('HMGET', KEYS[1], 'failures', 'notBefore')
if not f[1] then return false end
return {tonumber(f[1]), math.max(0, (tonumber(f[2]) or 0) - now)}`;

/** Counts a failure of KEYS[1], remembered ARGV[1] ms; returns the failures now. */
export const FAIL = `local n = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return n`;

/** Holds KEYS[1] for ARGV[1] ms from now (never shortens a longer hold); returns the ms held. */
export const HOLD = `${NOW}
local hold = now + tonumber(ARGV[1])
local prev = tonumber(redis.call('HGET', KEYS[1], 'notBefore') or '0')
if hold > prev then redis.call('HSET', KEYS[1], 'notBefore', hold) else hold = prev end
return hold - now`;
