"""Sending at the pace the Cloud API allows, shared by every worker through Redis.

Meta's limits (cited where they are documented):

- Throughput, per business phone number: "Cloud API supports up to 80 messages per second
  (mps) by default, and up to 1,000 mps by automatic upgrade ... If you attempt to send more
  messages than your current throughput level allows, the API will return error code 130429"
  (https://developers.facebook.com/documentation/business-messaging/whatsapp/throughput).
  Paced here as at most WHATSAPP_NUMBER_MPS sends in any window of 1 s plus
  WHATSAPP_PACE_MARGIN_SECONDS (a sliding log of grants): the margin absorbs the time between
  our grant and the request reaching Meta, which we cannot see.
- Pair rate, per business number and customer: one message every 6 s to the same WhatsApp
  user, with bursts of up to 45 messages that borrow from the future: after a burst of n the
  pair may send again once n x 6 s have passed (131056 otherwise; the error code table,
  https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes,
  says "Too many messages sent from the sender phone number to the same recipient phone number
  in a short period of time"; the burst rule as Meta's send-messages page states it is
  summarised in https://developers.whats91.com/rate-limits and
  https://dualhook.com/docs/capacity-quality-limits). Paced here by WHATSAPP_PAIR_INTERVAL_SECONDS
  (plus the margin) and WHATSAPP_PAIR_BURST: a pair that is paid up starts a burst; inside the
  burst's first interval up to BURST sends go, each adding one interval to the debt; then the
  next send waits until the debt is paid.

One Redis round trip per send attempt: a Lua script (RESERVE) checks both limits and takes the
slot atomically (with Redis's clock), or answers how long to wait. A send that must wait raises
PaceWait before anything is claimed or counted: the saga retries it with that countdown,
without spending an attempt (whatsapp.saga.reply), as for an open breaker.

Who goes first when the number's rate is exhausted: the waiters of a number are kept in a
sorted set scored by the deadline of their 24-hour window (lead.last_inbound_at + 24 h; a send
with no window, a template or a read receipt, scores after every reply, read receipts last).
A free slot goes to a sender only if fewer senders with an earlier deadline are waiting than
there are free slots, so a reply whose window closes soonest goes out before later ones, and
a waiter's countdown is worked out from its rank. A waiter that never comes back (its task
died) is forgotten after its countdown plus a grace, so it cannot hold the number for long.
A send blocked by its pair does not queue on the number (it would hold slots other customers
can use).

A 130429 or 131056 that still comes back (another sender on the number, inbound traffic,
which Meta counts too) slows that number or pair down: THROTTLED doubles its slowdown factor
(up to MAX_SLOWDOWN; the window, or the pair's interval, is multiplied by it) and holds it for
one slowed window; the factor then decays back to 1 with a half-life of RECOVERY_HALF_LIFE_SECONDS.

Keys: ``pace:{<phone_number_id>}:log|wait|expiry|slow`` and ``pace:{<phone_number_id>}:pair:<h>``,
where <h> is an HMAC of the recipient (keyed by SECRET_KEY), never the customer's number.
If Redis cannot be reached the send goes unpaced (logged once per outage): the pacer is a
courtesy to Meta, never a reason to refuse work; Meta's own throttling answers still retry.
With WHATSAPP_NUMBER_MPS and WHATSAPP_PAIR_INTERVAL_SECONDS both 0 (off) no Redis call is made.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.utils.crypto import salted_hmac

from core.breakers.storage import make_client
from core.errors import Transient
from core.metrics import counters

log = logging.getLogger(__name__)

NUMBER_CODE = 130429
PAIR_CODE = 131056
MAX_SLOWDOWN = 16.0
RECOVERY_HALF_LIFE_SECONDS = 30.0
# Seconds a waiter keeps its place after its countdown, at least.
WAITER_GRACE_SECONDS = 2.0
CUSTOMER_SERVICE_WINDOW = timedelta(hours=24)
# Scores (ms since the epoch) of the sends without a window: after every reply, read receipts last.
NO_WINDOW = 2**51
READ_RECEIPT = 2**52

_COMMON = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local half = tonumber(ARGV[8])
local function slowdown(f, at)
  f = tonumber(f)
  if not f then return 1 end
  return 1 + (f - 1) * (0.5 ^ ((now - tonumber(at)) / half))
end
"""

# KEYS: 1 log, 2 waiters, 3 waiter expiry, 4 number slowdown, 5 pair
# ARGV: 1 token, 2 priority, 3 mps (0 off), 4 window ms, 5 pair interval ms (0 off), 6 burst,
#       7 margin ms, 8 half-life ms, 9 grace ms
# Answers {wait ms, limit}: {0, ''} granted, else {ms, 'number' | 'pair'}.
RESERVE = (
    _COMMON
    + r"""
local token, prio = ARGV[1], tonumber(ARGV[2])
local mps, window = tonumber(ARGV[3]), tonumber(ARGV[4])
local interval, burst, margin = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local grace = tonumber(ARGV[9])
local pair = interval > 0
local tat, start, count, step = 0, 0, 0, 0
if pair then
  local v = redis.call('HMGET', KEYS[5], 'tat', 'start', 'count', 'f', 'at')
  tat, start, count = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0
  step = math.floor(interval * slowdown(v[4], v[5])) + margin
  if now < tat and not (now < start + step and count < burst) then
    if mps > 0 then
      redis.call('ZREM', KEYS[2], token)
      redis.call('ZREM', KEYS[3], token)
    end
    return {tat - now, 'pair'}
  end
end
if mps > 0 then
  local s = redis.call('HMGET', KEYS[4], 'f', 'at', 'hold')
  local w = math.floor(window * slowdown(s[1], s[2]))
  local slot = math.max(1, math.ceil(w / mps))
  local hold = tonumber(s[3]) or 0
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - w)
  local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
  if #stale > 0 then
    redis.call('ZREM', KEYS[2], unpack(stale))
    redis.call('ZREM', KEYS[3], unpack(stale))
  end
  local free = mps - redis.call('ZCARD', KEYS[1])
  if now < hold then free = 0 end
  redis.call('ZADD', KEYS[2], prio, token)
  local rank = redis.call('ZRANK', KEYS[2], token)
  if rank >= free then
    local base = 0
    if now < hold then
      base = hold - now
    else
      local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
      if first[2] then base = math.max(0, tonumber(first[2]) + w - now) end
    end
    local wait = base + (rank - math.max(free, 0)) * slot
    if wait < slot then wait = slot end
    redis.call('ZADD', KEYS[3], now + wait + math.max(grace, wait), token)
    redis.call('PEXPIRE', KEYS[2], wait + math.max(grace, wait) + w)
    redis.call('PEXPIRE', KEYS[3], wait + math.max(grace, wait) + w)
    return {wait, 'number'}
  end
  redis.call('ZREM', KEYS[2], token)
  redis.call('ZREM', KEYS[3], token)
  redis.call('ZADD', KEYS[1], now, token .. '@' .. now)
  redis.call('PEXPIRE', KEYS[1], w + 1000)
end
if pair then
  if now >= tat then
    start, count, tat = now, 1, now + step
  else
    count, tat = count + 1, tat + step
  end
  redis.call('HSET', KEYS[5], 'tat', tat, 'start', start, 'count', count)
  redis.call('PEXPIRE', KEYS[5], tat - now + step + math.floor(half * 10))
end
return {0, ''}
"""
)

# KEYS: 1 number slowdown, 2 pair.  ARGV: 1 limit ('number' | 'pair'), 2 max factor,
# 3 window ms, 4 pair interval ms, 5 burst, 6 margin ms, 7 unused, 8 half-life ms.
# Answers the new factor (x1000).
THROTTLED = (
    _COMMON
    + r"""
local max_f, window, interval, burst, margin = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5]), tonumber(ARGV[6])
local key = ARGV[1] == 'pair' and KEYS[2] or KEYS[1]
local v = redis.call('HMGET', key, 'f', 'at', 'tat')
local f = math.min(max_f, slowdown(v[1], v[2]) * 2)
local ttl = math.floor(half * 10)
if ARGV[1] == 'pair' then
  local step = math.floor(interval * f) + margin
  local tat = math.max(tonumber(v[3]) or 0, now + step)
  -- A fresh debt and no burst to continue: the next send waits for the whole slowed interval.
  redis.call('HSET', key, 'f', tostring(f), 'at', now, 'tat', tat, 'start', 0, 'count', burst)
  redis.call('PEXPIRE', key, tat - now + ttl)
else
  redis.call('HSET', key, 'f', tostring(f), 'at', now, 'hold', now + math.floor(window * f))
  redis.call('PEXPIRE', key, math.floor(window * f) + ttl)
end
return math.floor(f * 1000)
"""
)


class PaceWait(Transient):
    """Not sent yet: the number or the pair has no slot free for `seconds`. Nothing was
    claimed or counted; try again after countdown()."""

    health_signal = False

    def __init__(self, seconds: float, limit: str) -> None:
        self.seconds = max(0.0, seconds)
        self.limit = limit
        super().__init__(f"paced: the {limit}'s rate allows this send in {self.seconds:.2f}s")

    def countdown(self) -> float:
        # A little later rather than earlier: coming back before the slot costs another round trip.
        return self.seconds * random.uniform(1.0, 1.05) + 0.01


@dataclass(frozen=True)
class Limits:
    mps: int
    pair_interval: float
    pair_burst: int
    margin: float

    @property
    def off(self) -> bool:
        return self.mps <= 0 and self.pair_interval <= 0


def limits() -> Limits:
    """Read per call, so a test's settings override applies at once."""
    return Limits(
        mps=int(getattr(settings, "WHATSAPP_NUMBER_MPS", 80)),
        pair_interval=float(getattr(settings, "WHATSAPP_PAIR_INTERVAL_SECONDS", 6.0)),
        pair_burst=max(1, int(getattr(settings, "WHATSAPP_PAIR_BURST", 45))),
        margin=float(getattr(settings, "WHATSAPP_PACE_MARGIN_SECONDS", 0.1)),
    )


def keys(phone_number_id: str, recipient: str | None) -> list[str]:
    prefix = f"pace:{{{phone_number_id}}}"
    pair = f"{prefix}:pair:{recipient_hash(recipient)}" if recipient else f"{prefix}:pair:-"
    return [f"{prefix}:log", f"{prefix}:wait", f"{prefix}:expiry", f"{prefix}:slow", pair]


def recipient_hash(recipient: str) -> str:
    """The customer's number as it may appear in a Redis key: an HMAC, not reversible by
    trying every phone number without the SECRET_KEY."""
    return salted_hmac("whatsapp.send.pacer", recipient).hexdigest()[:24]


def window_deadline(last_inbound_at: datetime | None) -> int:
    """The waiters' score: when the 24-hour window closes, in ms (NO_WINDOW when none)."""
    if last_inbound_at is None:
        return NO_WINDOW
    return int((last_inbound_at + CUSTOMER_SERVICE_WINDOW).timestamp() * 1000)


class _Link:
    """The process's Redis client and scripts, remembering an outage so that each send does
    not pay a connect timeout while Redis is down (tried again every few seconds)."""

    def __init__(self) -> None:
        url = getattr(settings, "BREAKER_REDIS_URL", None) or settings.REDIS_URL
        self.client = make_client(url, float(getattr(settings, "BREAKER_REDIS_TIMEOUT_SECONDS", 0.5)))
        self.reserve = self.client.register_script(RESERVE)
        self.throttled = self.client.register_script(THROTTLED)
        self.retry_at = 0.0
        self.down = False

    def run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        if self.down and time.monotonic() < self.retry_at:
            return None
        try:
            answer = script(keys=keys, args=args)
        except (redis.RedisError, OSError) as exc:
            self.retry_at = time.monotonic() + 5.0
            if not self.down:
                self.down = True
                log.warning("pacer: Redis unreachable (%s); sends go unpaced until it answers", type(exc).__name__)
            return None
        if self.down:
            self.down = False
            log.info("pacer: Redis answers again; sends are paced again")
        return answer


_lock = threading.Lock()
_link: _Link | None = None


def link() -> _Link:
    global _link
    with _lock:
        if _link is None:
            _link = _Link()
        return _link


def _args(limit: Limits) -> list[Any]:
    return [
        limit.mps,
        1000 + int(limit.margin * 1000),
        int(limit.pair_interval * 1000),
        limit.pair_burst,
        int(limit.margin * 1000) if limit.pair_interval > 0 else 0,
        int(RECOVERY_HALF_LIFE_SECONDS * 1000),
        int(WAITER_GRACE_SECONDS * 1000),
    ]


def reserve(phone_number_id: str, *, token: str, recipient: str | None = None, priority: int = NO_WINDOW) -> None:
    """Take a slot for one send now, or raise PaceWait. `token` names the send (the same on
    every retry, so a waiter keeps its place); `recipient` is None for a read receipt (no pair);
    `priority` is the window deadline (window_deadline) or READ_RECEIPT."""
    limit = limits()
    if limit.off or not phone_number_id:
        return
    if recipient is None:
        limit = Limits(limit.mps, 0.0, limit.pair_burst, limit.margin)
        if limit.off:
            return
    answer = link().run(link().reserve, keys(phone_number_id, recipient), [token, priority, *_args(limit)])
    if not answer or int(answer[0]) <= 0:
        return
    seconds = int(answer[0]) / 1000
    kind = answer[1].decode() if isinstance(answer[1], bytes) else str(answer[1])
    counters.paced(phone_number_id, kind, seconds)
    raise PaceWait(seconds, kind)


def throttled(phone_number_id: str, code: int | None, *, recipient: str | None = None) -> None:
    """Meta answered 130429 (the number) or 131056 (the pair) all the same: slow it down."""
    if code not in (NUMBER_CODE, PAIR_CODE) or not phone_number_id:
        return
    kind = "pair" if code == PAIR_CODE else "number"
    limit = limits()
    if (kind == "pair" and (limit.pair_interval <= 0 or not recipient)) or (kind == "number" and limit.mps <= 0):
        return
    counters.pace_throttled(phone_number_id, kind)
    args = _args(limit)
    link().run(
        link().throttled,
        [keys(phone_number_id, recipient)[3], keys(phone_number_id, recipient)[4]],
        [kind, MAX_SLOWDOWN, args[1], args[2], args[3], args[4], 0, args[5]],
    )
    log.warning("WhatsApp %s %s throttled us (%s): slowing it down", phone_number_id, kind, code)
