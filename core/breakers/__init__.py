"""Circuit breakers shared by every worker process through Redis.

One breaker per external service, named "<kind>:<instance>" (``whatsapp:<phone_number_id>``,
``webhook:<scheme>://<host>:<port>``, see core.clients.webhook.breaker_name: never more
of a URL than its origin, since names are shown in the admin, the command and the metrics)::

    from core.breakers import CircuitOpen, breaker_for

    try:
        breaker_for("webhook:https://crm.example.com:443").call(post, url, payload)
    except CircuitOpen as exc:
        raise self.retry(countdown=exc.countdown())   # the service was not called

It opens when at least BREAKER_FAILURE_RATE of at least BREAKER_MIN_CALLS calls
in the last BREAKER_WINDOW_SECONDS failed, or after BREAKER_CONSECUTIVE_FAILURES
failures in a row; refuses calls for BREAKER_OPEN_SECONDS; then lets at most
BREAKER_HALF_OPEN_PROBES calls at a time through, across all processes, and
closes after BREAKER_CLOSE_AFTER of them succeed (one failure re-opens it).
HTTP 4xx other than 429 counts neither way. BREAKER_OVERRIDES changes any of
these per breaker name. Every change is appended to the Redis stream
``breaker:events`` and passed to the listeners by the one process that made it.
If Redis is unreachable each process guards on its own (BREAKER_LOCAL_FALLBACK).
A call costs one Redis round trip: after a success, a process takes the breaker
for closed for up to a second without asking (core.breakers.storage says why
that keeps every rule above).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, cast

import redis

from core.breakers.breaker import (
    Breaker,
    CircuitOpen,
    Listener,
    add_listener,
    default_is_health_error,
    http_status,
    remove_listener,
)
from core.breakers.config import BreakerConfig, config_for
from core.breakers.storage import EVENTS_KEY, REGISTRY_KEY, BreakerStorage, RedisLink, keys_for, make_client
from core.breakers.types import CLOSED, HALF_OPEN, OPEN, Change

__all__ = [
    "CLOSED",
    "EVENTS_KEY",
    "HALF_OPEN",
    "OPEN",
    "REGISTRY_KEY",
    "Breaker",
    "BreakerConfig",
    "Change",
    "CircuitOpen",
    "Listener",
    "RedisLink",
    "add_listener",
    "all_breakers",
    "breaker_for",
    "config_for",
    "default_is_health_error",
    "force_close",
    "force_open",
    "http_status",
    "keys_for",
    "make_breaker",
    "remove_listener",
    "reset",
]

_lock = threading.Lock()
_breakers: dict[str, Breaker] = {}
_link: RedisLink | None = None


def _settings(name: str, default: Any) -> Any:
    from django.conf import settings

    return getattr(settings, name, default)


def default_link() -> RedisLink:
    """The process's link to settings.BREAKER_REDIS_URL (redis-py reconnects by itself after a fork)."""
    global _link
    with _lock:
        if _link is None:
            client = make_client(
                _settings("BREAKER_REDIS_URL", None) or _settings("REDIS_URL", "redis://127.0.0.1:6379/0"),
                _settings("BREAKER_REDIS_TIMEOUT_SECONDS", 0.5),
            )
            _link = RedisLink(client, retry_seconds=_settings("BREAKER_REDIS_RETRY_SECONDS", 5.0))
        return _link


def make_breaker(
    name: str,
    config: BreakerConfig | None = None,
    *,
    redis_client: redis.Redis | str | RedisLink | None = None,
    retry_seconds: float | None = None,
    local_fallback: bool | None = None,
    **options: Any,
) -> Breaker:
    """A new, uncached breaker: for tests, and for callers that need their own Redis.

    `redis_client` may be a client, a URL or a RedisLink; by default the
    process's link to settings.REDIS_URL. `options` go to Breaker
    (is_health_error, exclude, listeners, throw_new_error_on_trip).
    """
    if redis_client is None:
        link = default_link()
    elif isinstance(redis_client, RedisLink):
        link = redis_client
    else:
        if isinstance(redis_client, str):
            redis_client = make_client(redis_client, _settings("BREAKER_REDIS_TIMEOUT_SECONDS", 0.5))
        retry = retry_seconds if retry_seconds is not None else _settings("BREAKER_REDIS_RETRY_SECONDS", 5.0)
        link = RedisLink(redis_client, retry_seconds=retry)
    if local_fallback is None:
        local_fallback = _settings("BREAKER_LOCAL_FALLBACK", True)
    return Breaker(name, config or config_for(name), link, local_fallback=local_fallback, **options)


def breaker_for(name: str) -> Breaker:
    """The process's breaker for `name`, made once with the settings' thresholds."""
    breaker = _breakers.get(name)
    if breaker is None:
        made = make_breaker(name)
        with _lock:
            breaker = _breakers.setdefault(name, made)
    return breaker


def force_open(name: str, seconds: float | None = None) -> None:
    """Open `name` for every process: for `seconds`, or until force_close/reset."""
    breaker_for(name).open(seconds)


def force_close(name: str) -> None:
    breaker_for(name).close()


def reset(name: str) -> None:
    """Close `name` and forget its window, probes and history."""
    breaker_for(name).reset()


def all_breakers() -> list[dict]:
    """Snapshots of every breaker used within the idle TTL, by name.

    While Redis is unreachable, only the breakers this process knows, with
    their local state.
    """
    link = default_link()
    try:
        # The client returns bytes (decode_responses is off); redis-py's hints allow any reply.
        names = sorted(n.decode() for n in cast("list[bytes]", link.client.zrange(REGISTRY_KEY, 0, -1)))
    except (redis.RedisError, OSError):
        names = sorted(_breakers)
    snapshots = []
    for name in names:
        known = _breakers.get(name)
        snap = known.snapshot() if known else BreakerStorage(name, config_for(name), link).snapshot()
        if snap["backend"] == "redis" and not snap["exists"]:
            # Its keys expired: idle long enough to be forgotten.
            with contextlib.suppress(redis.RedisError, OSError):
                link.client.zrem(REGISTRY_KEY, name)
            continue
        snapshots.append(snap)
    return snapshots
