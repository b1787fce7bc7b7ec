"""Thresholds of one breaker: the BREAKER_* settings, then that breaker's BREAKER_OVERRIDES entry.

Read per breaker (not once at import) so a test's settings override, or a
per-service override, applies to the breaker it names and to no other.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

# Field name -> the setting that gives its default. BREAKER_OVERRIDES entries use the field names.
SETTINGS = {
    "failure_rate": "BREAKER_FAILURE_RATE",
    "min_calls": "BREAKER_MIN_CALLS",
    "window_seconds": "BREAKER_WINDOW_SECONDS",
    "consecutive_failures": "BREAKER_CONSECUTIVE_FAILURES",
    "open_seconds": "BREAKER_OPEN_SECONDS",
    "half_open_probes": "BREAKER_HALF_OPEN_PROBES",
    "close_after": "BREAKER_CLOSE_AFTER",
    "probe_timeout_seconds": "BREAKER_PROBE_TIMEOUT_SECONDS",
}

# Keys of a breaker nobody has called for this long expire. Never shorter than
# what the state machine itself must remember (see BreakerConfig.key_ttl_seconds).
IDLE_TTL_SECONDS = 3600.0


@dataclass(frozen=True)
class BreakerConfig:
    failure_rate: float = 0.5  # trip when failures / calls in the window reaches this ...
    min_calls: int = 10  # ... and the window holds at least this many calls
    window_seconds: float = 60.0
    consecutive_failures: int = 5  # or on this many failures in a row
    open_seconds: float = 30.0  # refuse calls this long, then probe
    half_open_probes: int = 1  # probes in flight at once, across every process
    close_after: int = 2  # successful probes that close it again
    probe_timeout_seconds: float = 30.0  # a probe slot whose holder died frees itself after this

    @property
    def key_ttl_seconds(self) -> float:
        return max(IDLE_TTL_SECONDS, 2 * (self.window_seconds + self.open_seconds + self.probe_timeout_seconds))


def config_for(name: str) -> BreakerConfig:
    """The settings' thresholds with `name`'s override applied."""
    from django.conf import settings

    base = BreakerConfig()
    values: dict[str, Any] = {
        field.name: getattr(settings, SETTINGS[field.name], getattr(base, field.name))
        for field in fields(BreakerConfig)
    }
    overrides = getattr(settings, "BREAKER_OVERRIDES", {}) or {}
    values.update(overrides.get(name, {}))
    return replace(base, **values)
