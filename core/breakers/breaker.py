"""The breaker callers use: pybreaker's CircuitBreaker API over the shared storage.

pybreaker's CircuitBreaker runs each call under a process-wide lock and moves
its state by reading then writing the storage; both are wrong for many
processes sharing one breaker. `Breaker` keeps the API (call, calling, the
decorator, listeners, exclude) and replaces the state machine with one atomic
decision before the call and one after it.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import pybreaker

from core.breakers.config import BreakerConfig
from core.breakers.storage import BreakerStorage, RedisLink
from core.breakers.types import OPEN, Change
from core.errors import PermanentActionError, Transient

logger = logging.getLogger("core.breakers")
T = TypeVar("T")

# A plain callable gets the Change; a pybreaker.CircuitBreakerListener gets state_change(cb, old, new).
Listener = Callable[[Change], None] | pybreaker.CircuitBreakerListener
_global_listeners: list[Listener] = []


class CircuitOpen(pybreaker.CircuitBreakerError, Transient):
    """The breaker refused the call without making it.

    `remaining` is how long, in seconds, it will go on refusing (as far as anyone
    can tell), so a task can retry after that instead of spending an attempt.
    """

    def __init__(self, name: str, remaining: float) -> None:
        self.name = name
        self.remaining = max(0.0, remaining)
        super().__init__(f"circuit breaker {name} is open; retry in {self.remaining:.1f}s")

    def countdown(self, jitter: float = 0.2, minimum: float = 0.5) -> float:
        """Seconds to wait before retrying: `remaining` plus up to `jitter` of it, so the
        tasks refused together do not all come back in the same instant."""
        return max(minimum, self.remaining * (1 + random.uniform(0, jitter)))


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (requests' HTTPError, or anything with .status_code)."""
    for holder in (exc, getattr(exc, "response", None)):
        status = getattr(holder, "status_code", None)
        if isinstance(status, int):
            return status
    return None


def default_is_health_error(exc: BaseException) -> bool:
    """A 4xx other than 429 means our request was wrong, not that the service is sick.
    KeyboardInterrupt, SystemExit and the like say nothing about it either."""
    if not isinstance(exc, Exception):
        return False
    # Our own classification: a permanent error means the request was wrong,
    # and some retryable ones (a reply already in flight) say nothing either.
    if isinstance(exc, PermanentActionError) or not getattr(exc, "health_signal", True):
        return False
    status = http_status(exc)
    return not (status is not None and 400 <= status < 500 and status != 429)


def add_listener(listener: Listener) -> None:
    """Called on every state change of every breaker, once in the whole cluster (by the process that made it)."""
    _global_listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    _global_listeners.remove(listener)


class Breaker(pybreaker.CircuitBreaker):
    """A circuit breaker whose state every process shares through Redis.

    `is_health_error(exc)` decides whether a failure counts; `exclude` (types or
    predicates, as in pybreaker) lists failures that never count. Unlike in
    pybreaker an excluded failure is not a success either: it is not counted at all.
    A call that trips the breaker re-raises its own exception (it did reach the
    service); pass throw_new_error_on_trip=True to get CircuitOpen instead.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        link: RedisLink,
        *,
        local_fallback: bool = True,
        is_health_error: Callable[[BaseException], bool] = default_is_health_error,
        exclude: Iterable[type[BaseException] | Callable[[Any], bool]] | None = None,
        listeners: Sequence[pybreaker.CircuitBreakerListener] | None = None,
        throw_new_error_on_trip: bool = False,
    ) -> None:
        storage = BreakerStorage(name, config, link, local_fallback=local_fallback)
        # Kept with its own type: pybreaker's _state_storage holds the same object as its base class.
        self._storage = storage
        self.config = config
        self._is_health_error = is_health_error
        super().__init__(
            fail_max=config.consecutive_failures,
            reset_timeout=config.open_seconds,
            success_threshold=config.close_after,
            exclude=exclude,
            listeners=listeners,
            state_storage=storage,
            name=name,
            throw_new_error_on_trip=throw_new_error_on_trip,
        )

    def _create_new_state(self, new_state: str, prev_state: Any = None, notify: bool = False) -> Any:
        """Never notify from here: listeners hear of a change from `_announce` only, once cluster-wide."""
        return super()._create_new_state(new_state, prev_state, notify=False)

    @property
    def storage(self) -> BreakerStorage:
        return self._storage

    # pybreaker's `state` is a read-write property holding a state object; here it is the
    # cluster's state name, read from the storage, and every transition goes through the
    # storage (open, close, reset, calling), so pybreaker's setter is never used.
    @property  # type: ignore[misc]
    def state(self) -> str:  # type: ignore[override]
        """As the cluster sees it: closed, open or half-open. An open breaker whose
        time is up reads "open" until the next call takes it to half-open."""
        return self.storage.snapshot()["state"]

    @property
    def current_state(self) -> str:
        return self.state

    def snapshot(self) -> dict:
        """For ops: name, state, calls and failures in the window, consecutive_failures,
        half_open_successes, probes_in_flight, opened_at (epoch s, None when closed),
        remaining (s), forced, backend ("redis", "local" or "none") and exists (keys in Redis)."""
        return self.storage.snapshot()

    def is_system_error(self, exception: BaseException) -> bool:
        return super().is_system_error(exception) and self._is_health_error(exception)

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self.calling():
            for listener in self.listeners:
                listener.before_call(self, func, *args, **kwargs)
            return func(*args, **kwargs)

    @contextlib.contextmanager
    def calling(self) -> Iterator[None]:
        """Guard a block: refused (CircuitOpen) before it runs, its outcome recorded after."""
        decision = self.storage.acquire()
        self._announce(decision.change)
        if decision.kind == "reject":
            raise CircuitOpen(self.storage.name, decision.remaining)
        try:
            yield
        except BaseException as exc:
            counts = self.is_system_error(exc)
            change = self.storage.record(decision, "failure" if counts else "ignored")
            if counts:
                for listener in self.listeners:
                    listener.failure(self, exc)
            self._announce(change)
            if change is not None and change.new == OPEN and self._throw_new_error_on_trip:
                raise CircuitOpen(self.storage.name, self.config.open_seconds) from exc
            raise
        self._announce(self.storage.record(decision, "success"))
        for observer in self.listeners:
            observer.success(self)

    def call_async(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("Breaker does not support tornado coroutines")

    def open(self, seconds: float | None = None) -> bool:
        """Open it for every process: for `seconds`, or (None) until close() or reset()."""
        self._announce(self.storage.force("open", seconds))
        return self._throw_new_error_on_trip

    def close(self) -> None:
        self._announce(self.storage.force("closed"))

    def reset(self) -> None:
        """Forget everything: state, window, probes."""
        self._announce(self.storage.force("reset"))

    def half_open(self) -> None:
        raise NotImplementedError("a breaker goes half-open by itself when its open time is up")

    def _announce(self, change: Change | None) -> None:
        """Tell listeners; only the process whose script made the change gets here with it."""
        if change is None:
            return
        log = logger.warning if change.new == OPEN else logger.info
        log("circuit breaker %s: %s -> %s", change.name, change.old, change.new)
        old, new = self._create_new_state(change.old), self._create_new_state(change.new)
        for listener in [*self.listeners, *_global_listeners]:
            try:
                if isinstance(listener, pybreaker.CircuitBreakerListener):
                    listener.state_change(self, old, new)
                else:
                    listener(change)
            except Exception:
                logger.exception("circuit breaker %s: listener %r failed", change.name, listener)
