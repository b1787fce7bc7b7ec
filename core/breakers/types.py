"""Small values passed between the breaker, its storage and the two state backends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pybreaker

CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN

Outcome = Literal["success", "failure", "ignored"]


@dataclass(frozen=True)
class Change:
    """One state change, announced by the one process that made it."""

    name: str
    old: str
    new: str
    at: float  # epoch seconds


@dataclass(frozen=True)
class Decision:
    """Whether a call may go: "allow" (closed), "probe" (holds `token`'s half-open slot) or "reject"."""

    kind: Literal["allow", "probe", "reject"]
    remaining: float = 0.0  # seconds, for "reject"
    token: str | None = None
    change: Change | None = None
    backend: Literal["redis", "local", "none"] = "local"
