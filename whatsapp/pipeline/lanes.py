"""Per-business fairness: a token bucket in Redis picks each message's lane.

A business within its rate (BUSINESS_RATE_PER_SECOND, bursts up to
BUSINESS_RATE_BURST) has its messages handed to Celery on the normal lane;
beyond it, on the bulk lane. Every task of a message's chain keeps its lane,
and workers take the bulk lane only when the normal lane of that queue is
empty (kombu's Redis transport pops priority lists in order). So one business
flooding the pipeline delays its own excess, never another business's
messages, and the excess is only delayed: nothing is failed or dropped, and a
business alone on the pipeline still runs at full speed.

A FIFO queue could not give this: 5,000 queued messages of one business would
sit in front of everyone else's.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import redis
from django.conf import settings

log = logging.getLogger(__name__)

NORMAL_LANE = 0  # Celery priority; with Redis, 0 is taken first.
BULK_LANE = 6
# Within a lane, a message already under way goes before one not yet started:
# its first task is sent this many priority steps behind its later ones (so 3
# and 9, the other two of kombu's four priority lists). A backlog is then
# worked through message by message, each finishing (effects done, reply
# sent) in turn, instead of step by step across the whole backlog, where no
# message finishes until nearly all of them are about to.
NEW_MESSAGE = 3

# For each bucket KEYS[i], takes up to ARGV[2 + i] tokens and returns how many
# it got, in order. Each refills at ARGV[1] per second up to ARGV[2]; Redis's
# own clock, so every process agrees on the time. All of a batch's businesses
# in one call: one round trip per batch, however many businesses it holds.
_TAKE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local granted = {}
for i, key in ipairs(KEYS) do
  local wanted = tonumber(ARGV[2 + i])
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(state[1]) or burst
  local at = tonumber(state[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
  granted[i] = math.min(wanted, math.floor(tokens))
  tokens = tokens - granted[i]
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('EXPIRE', key, math.ceil(burst / rate) + 60)
end
return granted
"""


@lru_cache(maxsize=1)
def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


@lru_cache(maxsize=1)
def _script() -> Any:
    return _client().register_script(_TAKE)


def bucket_key(business_id: str) -> str:
    return f"whatsapp:rate:{business_id}"


def take(wanted: Mapping[str, int]) -> dict[str, int]:
    """How many of each business's wanted messages are within its rate."""
    businesses = list(wanted)
    granted = _script()(
        keys=[bucket_key(b) for b in businesses],
        args=[settings.BUSINESS_RATE_PER_SECOND, settings.BUSINESS_RATE_BURST, *(wanted[b] for b in businesses)],
    )
    return {business: int(n) for business, n in zip(businesses, granted, strict=True)}


def lanes(business_ids: Sequence[str]) -> list[int]:
    """The lane of each message, in order: a business's first messages take
    its tokens, the rest go bulk. If Redis does not answer, everything goes on
    the normal lane: fairness is lost for a while, no message is."""
    wanted = Counter(business_ids)
    if not wanted:
        return []
    try:
        granted = take(wanted)
    except (redis.RedisError, OSError) as exc:
        log.warning("rate limit: Redis unreachable (%s); handing off without fairness", type(exc).__name__)
        granted = dict(wanted)
    result = []
    for business_id in business_ids:
        if granted[business_id] > 0:
            granted[business_id] -= 1
            result.append(NORMAL_LANE)
        else:
            result.append(BULK_LANE)
    return result
