"""The Lua scripts that move a breaker's state in Redis.

Each decision (may this call go, what did its outcome change) is one script, so
it reads and writes the state in one atomic step: two processes can never both
trip the breaker, both take the last probe slot, or both report one change.
Time is Redis's clock (TIME), not the callers', so skew between hosts cannot
make one worker think the open time has passed while another does not.

Every command a script runs counts in Redis (INFO commandstats shows each one),
so the common path is kept short: a success recorded on a closed breaker runs
HMGET, TIME and one ZADD, and nothing else unless housekeeping is due. The
housekeeping (trimming the window, the keys' TTLs, the registry) runs when the
state changes, on a failure, when a probe is involved, and otherwise once per
window (`touched` in the state hash says when it last ran): the window zsets
then hold at most two windows of calls, and the counts never include calls
older than the window, since they are counted from a floor, not by size.
A key a script creates gets its TTL in that script, or in the next one to
write it: set_open and set_closed delete the window and leave `touched` at 0
so that the next success, which creates the calls zset again, runs it.

KEYS: 1 state hash, 2 calls zset, 3 failures zset, 4 probes zset, 5 events
stream, 6 registry zset. Keys 1-4 share the hash tag {name}; 5 and 6 are
global, so on Redis Cluster these scripts would need those two moved into the
tag (standalone Redis is what this service uses).
ARGV: 1 name, 2 window ms, 3 min calls, 4 failure rate, 5 consecutive failures,
6 open ms, 7 half-open probes, 8 close after, 9 probe ttl ms, 10 key ttl ms,
11 events maxlen, 12.. per script.
acquire, record and force return {kind, ms, from, to, state}; from/to are ''
unless the script changed the state, and then the caller is the one process
that announces it; state is the breaker's state once the script is done, so
the caller's view of it (core.breakers.storage) is refreshed for free.
"""

PRELUDE = r"""
local name = ARGV[1]
local window_ms = tonumber(ARGV[2])
local min_calls = tonumber(ARGV[3])
local failure_rate = tonumber(ARGV[4])
local consecutive_max = tonumber(ARGV[5])
local open_ms = tonumber(ARGV[6])
local max_probes = tonumber(ARGV[7])
local close_after = tonumber(ARGV[8])
local probe_ttl_ms = tonumber(ARGV[9])
local key_ttl_ms = tonumber(ARGV[10])
local events_max = tonumber(ARGV[11])
local state_key, calls_key, fails_key, probes_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local events_key, registry_key = KEYS[5], KEYS[6]

-- Read only where the script needs it: a closed breaker's acquire, and a record
-- that changes nothing, do without.
local now = 0
local function tick()
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end

local function load()
  local v = redis.call('HMGET', state_key, 'state', 'open_until', 'consecutive', 'successes', 'opened_at', 'forced',
                       'touched')
  return {state = v[1] or 'closed', open_until = tonumber(v[2]) or 0, consecutive = tonumber(v[3]) or 0,
          successes = tonumber(v[4]) or 0, opened_at = tonumber(v[5]) or 0, forced = v[6] == '1',
          touched = tonumber(v[7]) or 0, cleared = false}
end

local function emit(from, to)
  if from == to then return end
  redis.call('XADD', events_key, 'MAXLEN', '~', events_max, '*', 'name', name, 'from', from, 'to', to,
             'at', string.format('%d.%03d', math.floor(now / 1000), now % 1000))
end

-- Housekeeping is due once per window, or at once when its keys may lack a TTL.
local function due(s)
  return s.touched == 0 or now - s.touched >= window_ms
end

-- Idle keys expire; a breaker forced open stays open until someone closes it.
-- After set_open/set_closed deleted the window, `touched` stays 0: the next
-- call recreates the calls zset and must give it its TTL.
local function touch(s)
  redis.call('HSET', state_key, 'touched', s.cleared and 0 or now)
  if s.forced then redis.call('PERSIST', state_key) else redis.call('PEXPIRE', state_key, key_ttl_ms) end
  redis.call('PEXPIRE', calls_key, key_ttl_ms)
  redis.call('PEXPIRE', fails_key, key_ttl_ms)
  redis.call('PEXPIRE', probes_key, key_ttl_ms)
  redis.call('ZADD', registry_key, now, name)
  redis.call('PEXPIRE', registry_key, key_ttl_ms)
end

-- The window is cleared on every change: failures from before an outage must
-- not trip the breaker again right after it closes.
local function set_open(s, until_ms)
  redis.call('HSET', state_key, 'state', 'open', 'opened_at', now, 'open_until', until_ms,
             'consecutive', 0, 'successes', 0, 'forced', s.forced and 1 or 0)
  redis.call('DEL', calls_key, fails_key, probes_key)
  emit(s.state, 'open')
  s.state, s.cleared = 'open', true
end

local function set_half_open(s)
  redis.call('HSET', state_key, 'state', 'half-open', 'successes', 0)
  redis.call('DEL', probes_key)
  emit(s.state, 'half-open')
  s.state = 'half-open'
end

local function set_closed(s)
  redis.call('HSET', state_key, 'state', 'closed', 'consecutive', 0, 'successes', 0, 'forced', 0, 'open_until', 0)
  redis.call('DEL', calls_key, fails_key, probes_key)
  emit(s.state, 'closed')
  s.state, s.cleared = 'closed', true
end
"""

# ARGV[12] = a fresh token, used as the probe slot if this call gets one.
# A closed breaker costs HMGET alone: no clock, no writes.
ACQUIRE = (
    PRELUDE
    + r"""
local token = ARGV[12]
local s = load()
if s.state == 'closed' then return {'allow', 0, '', '', 'closed'} end
tick()
local from, to = '', ''
if s.state == 'open' then
  if s.forced then return {'reject', open_ms, '', '', 'open'} end
  if now < s.open_until then return {'reject', s.open_until - now, '', '', 'open'} end
  set_half_open(s)
  from, to = 'open', 'half-open'
end
redis.call('ZREMRANGEBYSCORE', probes_key, '-inf', now)
if redis.call('ZCARD', probes_key) < max_probes then
  redis.call('ZADD', probes_key, now + probe_ttl_ms, token)
  touch(s)
  return {'probe', 0, from, to, s.state}
end
-- Every slot is taken: come back when the oldest probe must have ended.
local oldest = redis.call('ZRANGE', probes_key, 0, 0, 'WITHSCORES')
touch(s)
return {'reject', math.min(tonumber(oldest[2]) - now, open_ms), from, to, s.state}
"""
)

# ARGV[12] = success | failure | ignored, ARGV[13] = probe token or '', ARGV[14] = unique call id.
RECORD = (
    PRELUDE
    + r"""
local outcome, token, member = ARGV[12], ARGV[13], ARGV[14]
local s = load()
if token ~= '' then
  -- A probe whose slot expired, or whose breaker moved on, no longer speaks for it.
  if redis.call('ZREM', probes_key, token) == 0 or s.state ~= 'half-open' then return {'stale', 0, '', '', s.state} end
  tick()
  if outcome == 'success' then
    s.successes = s.successes + 1
    if s.successes >= close_after then
      set_closed(s)
      touch(s)
      return {'ok', 0, 'half-open', 'closed', s.state}
    end
    redis.call('HSET', state_key, 'successes', s.successes)
  elseif outcome == 'failure' then
    set_open(s, now + open_ms)
    touch(s)
    return {'ok', 0, 'half-open', 'open', s.state}
  end
  touch(s)
  return {'ok', 0, '', '', s.state}
end
-- A call let through while closed that ends after the breaker opened says nothing new.
if s.state ~= 'closed' or outcome == 'ignored' then return {'stale', 0, '', '', s.state} end
tick()
local floor = now - window_ms
redis.call('ZADD', calls_key, now, member)
if outcome == 'success' then
  if s.consecutive > 0 then redis.call('HSET', state_key, 'consecutive', 0) end
  if due(s) then
    redis.call('ZREMRANGEBYSCORE', calls_key, '-inf', floor)
    redis.call('ZREMRANGEBYSCORE', fails_key, '-inf', floor)
    touch(s)
  end
  return {'ok', 0, '', '', s.state}
end
redis.call('ZADD', fails_key, now, member)
redis.call('ZREMRANGEBYSCORE', calls_key, '-inf', floor)
redis.call('ZREMRANGEBYSCORE', fails_key, '-inf', floor)
s.consecutive = s.consecutive + 1
local calls = redis.call('ZCARD', calls_key)
local fails = redis.call('ZCARD', fails_key)
if s.consecutive >= consecutive_max or (calls >= min_calls and fails >= failure_rate * calls) then
  set_open(s, now + open_ms)
  touch(s)
  return {'ok', 0, 'closed', 'open', s.state}
end
redis.call('HSET', state_key, 'state', 'closed', 'consecutive', s.consecutive)
touch(s)
return {'ok', 0, '', '', s.state}
"""
)

# ARGV[12] = open | closed | reset, ARGV[13] = ms to stay open, or '' to hold open until closed.
FORCE = (
    PRELUDE
    + r"""
local target, hold = ARGV[12], ARGV[13]
tick()
local s = load()
local from = s.state
if target == 'reset' then
  redis.call('DEL', state_key, calls_key, fails_key, probes_key)
  redis.call('ZREM', registry_key, name)
  emit(from, 'closed')
  if from == 'closed' then return {'ok', 0, '', '', 'closed'} end
  return {'ok', 0, from, 'closed', 'closed'}
end
if target == 'open' then
  s.forced = hold == ''
  local until_ms = now + open_ms
  if not s.forced then until_ms = now + tonumber(hold) end
  set_open(s, until_ms)
else
  s.forced = false
  set_closed(s)
end
touch(s)
if from == s.state then return {'ok', 0, '', '', s.state} end
return {'ok', 0, from, s.state, s.state}
"""
)

# Read-only. Returns {state, open_until, consecutive, successes, opened_at, forced,
# calls in window, failures in window, probes in flight, now, keys that exist}.
SNAPSHOT = (
    PRELUDE
    + r"""
tick()
local s = load()
local floor = string.format('(%d', now - window_ms)
local calls = redis.call('ZCOUNT', calls_key, floor, '+inf')
local fails = redis.call('ZCOUNT', fails_key, floor, '+inf')
local probes = redis.call('ZCOUNT', probes_key, string.format('(%d', now), '+inf')
local exists = redis.call('EXISTS', state_key, calls_key, fails_key, probes_key)
return {s.state, s.open_until, s.consecutive, s.successes, s.opened_at, s.forced and 1 or 0,
        calls, fails, probes, now, exists}
"""
)

SCRIPTS = {"acquire": ACQUIRE, "record": RECORD, "force": FORCE, "snapshot": SNAPSHOT}
