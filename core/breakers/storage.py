"""Where a breaker's state lives: Redis, shared by every process, else this process's memory.

`BreakerStorage` is a pybreaker.CircuitBreakerStorage so pybreaker code can read
it (state, counter, success_counter, opened_at), but the breaker itself never
uses pybreaker's read-then-write primitives: it asks `acquire` before a call and
`record` after, each one Lua script, so the decisions hold across processes.

A guarded call costs one round trip to Redis, not two. Every script answers with
the breaker's state; after a success that Redis recorded on a closed breaker,
`acquire` takes the breaker for closed, without asking, for VIEW_SECONDS (never
longer than the breaker's open time), and only the call's `record` goes to
Redis. So a breaker opened by another process, or forced open, is seen open by
this one within VIEW_SECONDS, and at the latest by the record of the one call it
let through on the view. Only successes earn the view: a process whose own calls
fail, which is where a trip comes from, asks Redis before each of its calls,
so while a service is failing no process calls it once the breaker is open
except for a call already in flight. The view being shorter than the open time,
it is gone before the breaker can go half-open, so probes stay bounded across
processes (a breaker forced open for less than VIEW_SECONDS is the exception).
Refusals, probes and trips are decided in Redis, by the scripts, never from the view.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from datetime import UTC, datetime

import pybreaker
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.breakers.config import BreakerConfig
from core.breakers.local import LocalState
from core.breakers.scripts import SCRIPTS
from core.breakers.types import CLOSED, Change, Decision, Outcome

logger = logging.getLogger("core.breakers")

EVENTS_KEY = "breaker:events"
REGISTRY_KEY = "breaker:registry"
EVENTS_MAXLEN = 10_000
# How long, after a success Redis recorded on a closed breaker, a process takes it for closed without asking.
VIEW_SECONDS = 1.0


def keys_for(name: str) -> list[str]:
    """The breaker's own keys share the hash tag {name}; the events stream and registry are global."""
    prefix = f"breaker:{{{name}}}"
    return [f"{prefix}:state", f"{prefix}:calls", f"{prefix}:fails", f"{prefix}:probes", EVENTS_KEY, REGISTRY_KEY]


class RedisUnavailable(Exception):
    """Redis did not answer; the caller falls back."""


def make_client(url: str, timeout: float) -> redis.Redis:
    """A client that fails fast: a breaker that waits seconds on a dead Redis slows every guarded call.
    redis-py's default retries (with backoff) are switched off for the same reason."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


@functools.lru_cache(maxsize=4096)
def _script_inputs(name: str, config: BreakerConfig) -> tuple[tuple[str, ...], tuple[str | int, ...]]:
    """The keys and leading ARGV of every script (see scripts.py), worked out once per breaker, not per call."""
    args = (
        name,
        int(config.window_seconds * 1000),
        config.min_calls,
        repr(float(config.failure_rate)),
        config.consecutive_failures,
        int(config.open_seconds * 1000),
        config.half_open_probes,
        config.close_after,
        int(config.probe_timeout_seconds * 1000),
        int(config.key_ttl_seconds * 1000),
        EVENTS_MAXLEN,
    )
    return tuple(keys_for(name)), args


class RedisLink:
    """A Redis client with the breaker scripts, shared by the breakers that use it.

    It also remembers an outage, so that while Redis is down each call does not
    pay a connect timeout: Redis is tried again only every `retry_seconds`.
    The WARNING is logged once per outage, not once per call.
    """

    def __init__(self, client: redis.Redis, *, retry_seconds: float = 5.0) -> None:
        self.client = client
        self.retry_seconds = retry_seconds
        self._scripts = {name: client.register_script(source) for name, source in SCRIPTS.items()}
        self._lock = threading.Lock()
        self._down = False
        self._retry_at = 0.0

    @property
    def down(self) -> bool:
        return self._down

    def run(self, script: str, name: str, config: BreakerConfig, *extra: str) -> list:
        if self._down and time.monotonic() < self._retry_at:
            raise RedisUnavailable()
        keys, args = _script_inputs(name, config)
        try:
            result = self._scripts[script](keys=keys, args=[*args, *extra])
        except (redis.RedisError, OSError) as exc:
            self._went_down(exc)
            raise RedisUnavailable() from exc
        if self._down:
            self._came_back()
        return [item.decode() if isinstance(item, bytes) else item for item in result]

    def _went_down(self, exc: BaseException) -> None:
        with self._lock:
            self._retry_at = time.monotonic() + self.retry_seconds
            if self._down:
                return
            self._down = True
        logger.warning(
            "circuit breakers: Redis unreachable (%s: %s); each process keeps its own breaker state "
            "until it answers again",
            type(exc).__name__,
            exc,
        )

    def _came_back(self) -> None:
        with self._lock:
            if not self._down:
                return
            self._down = False
        logger.info("circuit breakers: Redis answers again; breaker state is shared again")


class BreakerStorage(pybreaker.CircuitBreakerStorage):
    """One breaker's state: in Redis through `link`, in memory while Redis is unreachable.

    With `local_fallback` off, a call made while Redis is down is let through
    unguarded: failing open keeps the service working, and the breaker is only
    a protection, never a reason to refuse work by itself.
    """

    def __init__(self, name: str, config: BreakerConfig, link: RedisLink, *, local_fallback: bool = True) -> None:
        super().__init__(name)
        self.config = config
        self.link = link
        self.local_fallback = local_fallback
        self.local = LocalState(name)
        self._local_used = False
        # Until when (time.monotonic()) this process takes the breaker for closed without asking Redis.
        self._closed_until = 0.0
        self._view_seconds = min(VIEW_SECONDS, config.open_seconds)

    # -- what Breaker uses -------------------------------------------------

    def acquire(self) -> Decision:
        if time.monotonic() < self._closed_until and not self.link.down:
            return Decision("allow", backend="redis")
        token = uuid.uuid4().hex
        try:
            kind, ms, old, new, _ = self.link.run("acquire", self.name, self.config, token)
        except RedisUnavailable:
            return self._local(token)
        if self._local_used:
            # Redis is the truth again; what this process saw alone is stale by now.
            self.local, self._local_used = LocalState(self.name), False
        return Decision(kind, ms / 1000, token if kind == "probe" else None, self._change(old, new), "redis")

    def record(self, decision: Decision, outcome: Outcome) -> Change | None:
        if decision.backend == "none":
            return None
        if decision.backend == "redis":
            asked = time.monotonic()
            try:
                _, _, old, new, state = self.link.run(
                    "record", self.name, self.config, outcome, decision.token or "", uuid.uuid4().hex
                )
                self._saw(outcome, state, asked)
                return self._change(old, new)
            except RedisUnavailable:
                # Redis went away during the call: the outcome still counts, here.
                self._closed_until = 0.0
                decision = Decision("allow", backend="local")
        if not self.local_fallback:
            return None
        self._local_used = True
        return self.local.record(self.config, decision.token, outcome)

    def _saw(self, outcome: Outcome, state: str, asked: float) -> None:
        """Redis answered `state` to the record of `outcome`, sent at `asked`.

        Only a success on a closed breaker is taken for "closed" for the next calls: a
        process whose own calls fail is where a trip is coming from, so it asks Redis
        before each call. The view counts from when the script
        was sent, never from when its answer came: the state it read was at least that recent.
        """
        if outcome == "success" and state == CLOSED:
            self._closed_until = asked + self._view_seconds
        else:
            self._closed_until = 0.0

    def force(self, target: str, hold_seconds: float | None = None) -> Change | None:
        hold = "" if hold_seconds is None else str(int(hold_seconds * 1000))
        self._closed_until = 0.0
        try:
            _, _, old, new, _ = self.link.run("force", self.name, self.config, target, hold)
            return self._change(old, new)
        except RedisUnavailable:
            self._closed_until = 0.0
            self._local_used = True
            return self.local.force(self.config, "closed" if target == "reset" else target, hold_seconds)

    def snapshot(self) -> dict:
        try:
            (state, open_until, consecutive, successes, opened_at, forced, calls, failures, probes, now, exists) = (
                self.link.run("snapshot", self.name, self.config)
            )
            raw = {
                "state": state,
                "open_until": open_until / 1000,
                "consecutive_failures": consecutive,
                "half_open_successes": successes,
                "opened_at": opened_at / 1000,
                "forced": bool(forced),
                "calls": calls,
                "failures": failures,
                "probes_in_flight": probes,
                "now": now / 1000,
            }
            backend, known = "redis", bool(exists)
        except RedisUnavailable:
            raw = self.local.snapshot(self.config)
            backend, known = ("local" if self.local_fallback else "none"), True
        now, state = raw.pop("now"), raw["state"]
        remaining = self.config.open_seconds if raw["forced"] else max(0.0, raw["open_until"] - now)
        raw["remaining"] = round(remaining, 3) if state != CLOSED else 0.0
        if state == CLOSED:
            raw["opened_at"] = None
        raw.pop("open_until")
        return {"name": self.name, **raw, "backend": backend, "exists": known}

    def _local(self, token: str) -> Decision:
        if not self.local_fallback:
            return Decision("allow", backend="none")
        self._local_used = True
        decision = self.local.acquire(self.config, token)
        return Decision(decision.kind, decision.remaining, decision.token, decision.change, "local")

    def _change(self, old: str, new: str) -> Change | None:
        return Change(self.name, old, new, time.time()) if old and new else None

    # -- pybreaker's storage interface ---------------------------------------
    # For code that reads a breaker the pybreaker way. Writes map onto the
    # atomic operations; pybreaker's own half-open counters have no meaning here.

    @property
    def state(self) -> str:
        return self.snapshot()["state"]

    @state.setter
    def state(self, state: str) -> None:
        """Half-open is not set from outside: the first call after the open time takes it there."""
        if state in ("open", "closed"):
            self.force(state, self.config.open_seconds if state == "open" else None)

    def increment_counter(self) -> None:
        self.record(Decision("allow", backend="redis"), "failure")

    def reset_counter(self) -> None:
        """pybreaker calls this on every success."""
        self.record(Decision("allow", backend="redis"), "success")

    def increment_success_counter(self) -> None:
        pass

    def reset_success_counter(self) -> None:
        pass

    @property
    def counter(self) -> int:
        return self.snapshot()["consecutive_failures"]

    @property
    def success_counter(self) -> int:
        return self.snapshot()["half_open_successes"]

    @property
    def opened_at(self) -> datetime | None:
        opened = self.snapshot()["opened_at"]
        return datetime.fromtimestamp(opened, UTC) if opened else None

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        """Set by the Lua scripts whenever the breaker opens."""
