"""The same state machine as the Lua scripts, in this process's memory.

Used only while Redis cannot be reached: a breaker that forgets everything
when Redis goes away would hammer a failing service exactly when the system is
already degraded, so each process keeps guarding on its own until Redis is back.
It mirrors scripts.py rule for rule; change both together.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from core.breakers.config import BreakerConfig
from core.breakers.types import CLOSED, HALF_OPEN, OPEN, Change, Decision, Outcome


class LocalState:
    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self.state = CLOSED
        self.opened_at = 0.0
        self.open_until = 0.0
        self.forced = False
        self.consecutive = 0
        self.successes = 0
        self._calls: deque[tuple[float, bool]] = deque()  # (when, failed)
        self._probes: dict[str, float] = {}  # token -> expiry

    def acquire(self, config: BreakerConfig, token: str) -> Decision:
        with self._lock:
            now = time.time()
            change = None
            if self.state == OPEN:
                if self.forced:
                    return Decision("reject", config.open_seconds)
                if now < self.open_until:
                    return Decision("reject", self.open_until - now)
                change = self._move(HALF_OPEN, now)
            if self.state == HALF_OPEN:
                self._probes = {t: exp for t, exp in self._probes.items() if exp > now}
                if len(self._probes) < config.half_open_probes:
                    self._probes[token] = now + config.probe_timeout_seconds
                    return Decision("probe", 0.0, token, change)
                oldest = min(self._probes.values())
                return Decision("reject", min(oldest - now, config.open_seconds), None, change)
            return Decision("allow", 0.0)

    def record(self, config: BreakerConfig, token: str | None, outcome: Outcome) -> Change | None:
        with self._lock:
            now = time.time()
            if token:
                if self._probes.pop(token, None) is None or self.state != HALF_OPEN:
                    return None
                if outcome == "success":
                    self.successes += 1
                    if self.successes >= config.close_after:
                        return self._move(CLOSED, now)
                elif outcome == "failure":
                    return self._open(now, now + config.open_seconds, forced=False)
                return None
            if self.state != CLOSED or outcome == "ignored":
                return None
            floor = now - config.window_seconds
            while self._calls and self._calls[0][0] <= floor:
                self._calls.popleft()
            failed = outcome == "failure"
            self._calls.append((now, failed))
            if not failed:
                self.consecutive = 0
                return None
            self.consecutive += 1
            calls = len(self._calls)
            failures = sum(1 for _, f in self._calls if f)
            if self.consecutive >= config.consecutive_failures or (
                calls >= config.min_calls and failures >= config.failure_rate * calls
            ):
                return self._open(now, now + config.open_seconds, forced=False)
            return None

    def force(self, config: BreakerConfig, target: str, hold_seconds: float | None) -> Change | None:
        with self._lock:
            now = time.time()
            if target == "open":
                hold = config.open_seconds if hold_seconds is None else hold_seconds
                return self._open(now, now + hold, forced=hold_seconds is None)
            return self._move(CLOSED, now)

    def snapshot(self, config: BreakerConfig) -> dict:
        with self._lock:
            now = time.time()
            floor = now - config.window_seconds
            window = [f for t, f in self._calls if t > floor]
            return {
                "state": self.state,
                "open_until": self.open_until,
                "consecutive_failures": self.consecutive,
                "half_open_successes": self.successes,
                "opened_at": self.opened_at,
                "forced": self.forced,
                "calls": len(window),
                "failures": sum(window),
                "probes_in_flight": sum(1 for exp in self._probes.values() if exp > now),
                "now": now,
            }

    def _open(self, now: float, until: float, *, forced: bool) -> Change | None:
        self.opened_at, self.open_until, self.forced = now, until, forced
        return self._move(OPEN, now)

    def _move(self, to: str, now: float) -> Change | None:
        """Every change starts the next state from scratch, as set_open/set_closed do in Lua."""
        before = self.state
        self.state = to
        self.successes = 0
        self._probes.clear()
        if to != HALF_OPEN:
            self.consecutive = 0
            self._calls.clear()
        if to == CLOSED:
            self.forced = False
            self.open_until = 0.0
        return Change(self.name, before, to, now) if before != to else None
