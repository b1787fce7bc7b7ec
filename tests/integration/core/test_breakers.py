"""Circuit breakers shared through Redis across OS processes, on a real Redis and a
real HTTP endpoint, and a malformed override stopping `manage.py check`.

The multi-process test is the point of the design: four OS processes hammering
one failing service must trip the breaker once, keep the service unbothered
while it is open, and send it no more than the configured number of probes.
(One breaker's rules, in this process: tests/unit/core/test_breakers.py.)"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pybreaker
import pytest
import requests
from django.conf import settings
from werkzeug import Request, Response

import core.breakers as breakers
from core.breakers import (
    BreakerConfig,
    CircuitOpen,
    make_breaker,
)
from core.breakers.storage import VIEW_SECONDS
from tests.support.breakers import events, fail, get, ok

ROOT = Path(__file__).resolve().parents[3]
PROCESSES = 4
FORK = multiprocessing.get_context("fork")


# --- fixtures and helpers ----------------------------------------------------


class Endpoint:
    """An HTTP service whose answer the test switches, counting every request that reaches it."""

    def __init__(self, httpserver, status: int = 500) -> None:
        self.status = status
        self.hits: list[float] = []
        self._lock = threading.Lock()
        httpserver.expect_request("/svc").respond_with_handler(self._handle)
        self.url = httpserver.url_for("/svc")

    def _handle(self, request: Request) -> Response:
        with self._lock:
            self.hits.append(time.time())
        return Response("x", status=self.status)


# --- 1. many processes, one breaker ---------------------------------------


class Recorder(pybreaker.CircuitBreakerListener):
    def __init__(self) -> None:
        self.changes: list[tuple[str, str]] = []

    def state_change(self, cb, old_state, new_state) -> None:
        self.changes.append((old_state.name, new_state.name))


def _hammer(name: str, config: BreakerConfig, url: str, calls: int, pause: float, barrier, results) -> None:
    """One worker process: calls the endpoint through its own breaker and reports what happened."""
    recorder = Recorder()
    guard = make_breaker(name, config, redis_client=settings.REDIS_URL, listeners=[recorder])
    counts: Counter[str] = Counter()
    remaining: list[float] = []
    barrier.wait(timeout=20)
    for _ in range(calls):
        try:
            guard.call(get, url)
            counts["ok"] += 1
        except CircuitOpen as exc:
            counts["refused"] += 1
            remaining.append(exc.remaining)
        except requests.HTTPError:
            counts["error"] += 1
        time.sleep(pause)
    results.put({"counts": dict(counts), "changes": recorder.changes, "remaining": remaining})


def run_processes(
    name: str, config: BreakerConfig, url: str, calls: int, pause: float
) -> tuple[Counter, Counter, list]:
    barrier, results = FORK.Barrier(PROCESSES), FORK.Queue()
    procs = [
        FORK.Process(target=_hammer, args=(name, config, url, calls, pause, barrier, results)) for _ in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    reports = [results.get(timeout=30) for _ in procs]
    for proc in procs:
        proc.join(timeout=10)
        assert proc.exitcode == 0
    counts: Counter[str] = Counter()
    changes: Counter[tuple[str, str]] = Counter()
    remaining: list[float] = []
    for report in reports:
        counts.update(report["counts"])
        changes.update(report["changes"])
        remaining += report["remaining"]
    return counts, changes, remaining


def wait_open_time(guard: breakers.Breaker) -> None:
    time.sleep(guard.snapshot()["remaining"] + 0.1)


@pytest.mark.parametrize("probes", [1, 2])
def test_processes_share_one_breaker(httpserver, rdb, new_name, probes):
    name = new_name("webhook")
    endpoint = Endpoint(httpserver, status=500)
    config = BreakerConfig(
        open_seconds=2, half_open_probes=probes, close_after=2, consecutive_failures=5, probe_timeout_seconds=5
    )
    observer = make_breaker(name, config, redis_client=settings.REDIS_URL)

    # Failing: it trips once for everyone, and the endpoint hears nothing more while it is open.
    counts, changes, remaining = run_processes(name, config, endpoint.url, calls=30, pause=0.01)
    snap = observer.snapshot()
    assert snap["state"] == "open"
    assert events(rdb, name) == [("closed", "open")]
    assert changes == Counter({("closed", "open"): 1}), "exactly one process announces the change"
    # The 5 failures that tripped it, plus at most one call in flight in each other process.
    assert config.consecutive_failures <= len(endpoint.hits) <= config.consecutive_failures + PROCESSES - 1
    assert counts["error"] == len(endpoint.hits)
    assert counts["refused"] == PROCESSES * 30 - len(endpoint.hits)
    assert not [hit for hit in endpoint.hits if hit > snap["opened_at"] + 0.5]
    assert remaining and all(0 < r <= config.open_seconds for r in remaining)

    # Open time up, still failing: no more than `probes` calls get through, and it re-opens.
    wait_open_time(observer)
    before = len(endpoint.hits)
    counts, changes, _ = run_processes(name, config, endpoint.url, calls=20, pause=0.01)
    assert 1 <= len(endpoint.hits) - before <= probes
    assert observer.state == "open"
    assert events(rdb, name)[1:] == [("open", "half-open"), ("half-open", "open")]
    assert changes == Counter({("open", "half-open"): 1, ("half-open", "open"): 1})

    # Recovered: the probes succeed, it closes, and traffic flows again.
    endpoint.status = 200
    wait_open_time(observer)
    before = len(endpoint.hits)
    counts, changes, _ = run_processes(name, config, endpoint.url, calls=20, pause=0.02)
    assert observer.state == "closed"
    assert events(rdb, name)[3:] == [("open", "half-open"), ("half-open", "closed")]
    assert changes == Counter({("open", "half-open"): 1, ("half-open", "closed"): 1})
    assert counts["ok"] == len(endpoint.hits) - before > config.close_after
    assert counts["error"] == 0


def _trip(name: str, config: BreakerConfig) -> None:
    """Another process: fails until its breaker trips."""
    guard = make_breaker(name, config, redis_client=settings.REDIS_URL)
    for _ in range(config.consecutive_failures):
        with contextlib.suppress(ConnectionError):
            guard.call(fail)
    assert guard.snapshot()["state"] == "open"


def test_a_breaker_tripped_by_another_process_is_seen_within_a_second(new_name):
    """This process's view of the closed breaker (earned by a success) lasts VIEW_SECONDS
    at most: after that, the trip another process made refuses its calls unmade."""
    name = new_name("webhook")
    config = BreakerConfig(consecutive_failures=3, open_seconds=30)
    guard = make_breaker(name, config, redis_client=settings.REDIS_URL)
    assert guard.call(ok) == "ok"
    seen_at = time.monotonic()
    other = FORK.Process(target=_trip, args=(name, config))
    other.start()
    other.join(timeout=20)
    assert other.exitcode == 0
    time.sleep(max(0.0, seen_at + VIEW_SECONDS - time.monotonic()))
    with pytest.raises(CircuitOpen):
        guard.call(pytest.fail, "an open breaker must not run the call")


# --- 2. what counts as a failure --------------------------------------------


# --- 3. failure rate over the window ---------------------------------------


# --- 4. Redis outage --------------------------------------------------------


# --- 5. refusals, probes, admin -------------------------------------------


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("{not json", "setting BREAKER_OVERRIDES: is not valid JSON"),
        ('{"webhook:x": {"open_secs": 5}}', "setting BREAKER_OVERRIDES: 'webhook:x': unknown setting 'open_secs'"),
    ],
)
def test_malformed_overrides_stop_the_process_with_one_line(value, fragment):
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", SECRET_KEY="s" * 60, DEBUG="0", BREAKER_OVERRIDES=value)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert fragment in lines[0]
