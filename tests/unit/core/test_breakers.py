"""Circuit breakers on a real Redis and a real HTTP endpoint, in this process: what
counts as a failure, failure rates, the local fallback through a Redis outage, the
admin operations and the per-name overrides. (Several OS processes sharing one
breaker: tests/integration/core/test_breakers.py.)"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pybreaker
import pytest
import redis
import requests
from django.conf import settings

import core.breakers as breakers
from core.breakers import (
    EVENTS_KEY,
    BreakerConfig,
    CircuitOpen,
    keys_for,
    make_breaker,
)
from core.breakers.storage import VIEW_SECONDS
from tests.support.breakers import breaker, events, fail, get, ok
from tests.support.proxy import FaultProxy

# --- fixtures and helpers ----------------------------------------------------


@pytest.fixture(params=["redis", "local"])
def backend(request) -> str | None:
    """A Redis URL for the shared breaker, or a dead one so the breaker runs on its local fallback
    (the same rules must hold there)."""
    return settings.REDIS_URL if request.param == "redis" else "redis://127.0.0.1:1/0"


# --- 1. many processes, one breaker ---------------------------------------


# --- 2. what counts as a failure --------------------------------------------


def test_4xx_do_not_count_but_429_does(httpserver, new_name, backend):
    httpserver.expect_request("/missing").respond_with_data("no", status=404)
    httpserver.expect_request("/busy").respond_with_data("slow down", status=429)
    guard = breaker(new_name(), backend, consecutive_failures=3, min_calls=5)

    for _ in range(20):
        with pytest.raises(requests.HTTPError):
            guard.call(get, httpserver.url_for("/missing"))
    snap = guard.snapshot()
    assert (snap["state"], snap["calls"], snap["failures"], snap["consecutive_failures"]) == ("closed", 0, 0, 0)

    for _ in range(3):
        with pytest.raises(requests.HTTPError):
            guard.call(get, httpserver.url_for("/busy"))
    assert guard.state == "open"
    with pytest.raises(CircuitOpen):
        guard.call(get, httpserver.url_for("/busy"))


def test_ignored_error_frees_a_probe_without_deciding(httpserver, new_name, backend):
    httpserver.expect_request("/missing").respond_with_data("no", status=404)
    guard = breaker(new_name(), backend, consecutive_failures=1, open_seconds=0.3, close_after=1)
    with pytest.raises(ConnectionError):
        guard.call(fail)
    time.sleep(0.4)
    with pytest.raises(requests.HTTPError):
        guard.call(get, httpserver.url_for("/missing"))
    snap = guard.snapshot()
    assert (snap["state"], snap["probes_in_flight"]) == ("half-open", 0)
    assert guard.call(ok) == "ok"
    assert guard.state == "closed"


def test_exclude_and_health_hook(new_name, backend):
    class BadInput(Exception):
        pass

    def raise_(exc: Exception) -> None:
        raise exc

    guard = make_breaker(
        new_name(),
        BreakerConfig(consecutive_failures=2),
        redis_client=backend,
        retry_seconds=60,
        exclude=[BadInput],
        is_health_error=lambda exc: not isinstance(exc, KeyError),
    )
    for exc in [BadInput(), KeyError("k")] * 5:
        with pytest.raises(type(exc)):
            guard.call(raise_, exc)
    assert guard.snapshot()["failures"] == 0
    assert guard.state == "closed"


def test_decorator_and_context_manager_are_guarded(new_name, backend):
    guard = breaker(new_name(), backend, consecutive_failures=2)

    @guard
    def flaky() -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        flaky()
    with pytest.raises(ConnectionError), guard.calling():
        raise ConnectionError("down")
    assert guard.state == "open"
    with pytest.raises(CircuitOpen), guard.calling():
        pytest.fail("an open breaker must not run the block")


# --- 3. failure rate over the window ---------------------------------------

TRIPS = "FSFSFFSFSF"  # 6 of 10 failed, never more than 2 in a row
HOLDS = "FSFSSFSFSS"  # 4 of 10


def play(guard: breakers.Breaker, pattern: str) -> None:
    for step in pattern:
        if step == "F":
            with pytest.raises(ConnectionError):
                guard.call(fail)
        else:
            assert guard.call(ok) == "ok"


def test_failure_rate_trips(new_name, backend):
    guard = breaker(new_name(), backend, failure_rate=0.5, min_calls=10, consecutive_failures=5)
    play(guard, TRIPS[:-1])
    assert guard.state == "closed", "9 calls are fewer than min_calls"
    play(guard, TRIPS[-1])
    assert guard.state == "open"


def test_failure_rate_below_threshold_holds(new_name, backend):
    guard = breaker(new_name(), backend, failure_rate=0.5, min_calls=10, consecutive_failures=5)
    play(guard, HOLDS)
    snap = guard.snapshot()
    assert (snap["state"], snap["calls"], snap["failures"]) == ("closed", 10, 4)


def test_consecutive_failures_trip_before_min_calls(new_name, backend):
    guard = breaker(new_name(), backend, min_calls=10, consecutive_failures=5)
    play(guard, "SFFFF")
    assert guard.state == "closed"
    play(guard, "F")
    assert guard.state == "open"


# --- 4. Redis outage --------------------------------------------------------


def test_redis_outage_falls_back_locally_and_recovers(new_name, rdb, caplog):
    caplog.set_level(logging.INFO, logger="core.breakers")
    target = urlsplit(settings.REDIS_URL)
    proxy = FaultProxy(target.hostname, target.port or 6379)
    try:
        url = urlunsplit(target._replace(netloc=f"127.0.0.1:{proxy.port}"))
        name = new_name()
        guard = make_breaker(
            name, BreakerConfig(consecutive_failures=3, open_seconds=30), redis_client=url, retry_seconds=0.2
        )
        calls_key = keys_for(name)[1]

        for _ in range(5):
            assert guard.call(ok) == "ok"
        assert rdb.zcard(calls_key) == 5
        assert guard.snapshot()["backend"] == "redis"

        proxy.cut()
        started = time.monotonic()
        for _ in range(20):
            assert guard.call(ok) == "ok"
        assert time.monotonic() - started < 5, "a dead Redis must not stall the caller"
        assert guard.snapshot()["backend"] == "local"
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "Redis unreachable" in r.message]
        assert len(warnings) == 1

        # The local breaker still guards this process.
        play(guard, "FFF")
        with pytest.raises(CircuitOpen):
            guard.call(ok)
        assert rdb.hget(keys_for(name)[0], "state") in (None, b"closed"), "Redis never heard of it"

        proxy.restore()
        time.sleep(0.3)
        assert guard.call(ok) == "ok", "back on Redis, where the breaker is closed"
        assert guard.snapshot()["backend"] == "redis"
        assert rdb.zcard(calls_key) == 6
        assert any("answers again" in r.message for r in caplog.records)

        proxy.cut()
        guard.call(ok)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "Redis unreachable" in r.message]
        assert len(warnings) == 2, "one warning per outage"
    finally:
        proxy.close()


def test_without_local_fallback_calls_go_through_unguarded(new_name):
    guard = make_breaker(
        new_name(), BreakerConfig(consecutive_failures=1), redis_client="redis://127.0.0.1:1/0", local_fallback=False
    )
    for _ in range(3):
        with pytest.raises(ConnectionError):
            guard.call(fail)
    assert guard.call(ok) == "ok"


# --- 5. refusals, probes, admin -------------------------------------------


def test_open_breaker_says_how_long(new_name, backend):
    guard = breaker(new_name(), backend, consecutive_failures=2, open_seconds=5)
    play(guard, "FF")
    with pytest.raises(CircuitOpen) as refused:
        guard.call(ok)
    assert isinstance(refused.value, pybreaker.CircuitBreakerError)
    assert 4.5 < refused.value.remaining <= 5
    assert refused.value.countdown() >= refused.value.remaining
    time.sleep(0.5)
    with pytest.raises(CircuitOpen) as later:
        guard.call(ok)
    assert 4.0 < later.value.remaining < refused.value.remaining


def test_crashed_probe_frees_its_slot(new_name, backend):
    guard = breaker(new_name(), backend, consecutive_failures=1, open_seconds=0.2, probe_timeout_seconds=0.5)
    play(guard, "F")
    time.sleep(0.3)
    assert guard.storage.acquire().kind == "probe"  # a prober that never reports back
    with pytest.raises(CircuitOpen) as refused:
        guard.call(ok)
    assert 0 < refused.value.remaining <= 0.5
    time.sleep(0.6)
    assert guard.call(ok) == "ok"
    assert guard.snapshot()["half_open_successes"] == 1


def test_admin_operations_and_listeners(new_name, rdb):
    name = new_name("whatsapp")
    seen: list[breakers.Change] = []
    breakers.add_listener(seen.append)
    try:
        breakers.force_open(name)
        with pytest.raises(CircuitOpen):
            breakers.breaker_for(name).call(ok)
        snap = breakers.breaker_for(name).snapshot()
        assert (snap["state"], snap["forced"]) == ("open", True)
        assert rdb.ttl(keys_for(name)[0]) == -1, "held open until someone closes it"
        assert name in [s["name"] for s in breakers.all_breakers()]

        breakers.force_close(name)
        assert breakers.breaker_for(name).call(ok) == "ok"
        breakers.force_open(name, seconds=10)
        assert rdb.ttl(keys_for(name)[0]) > 0, "idle keys expire"
        breakers.reset(name)
        assert breakers.breaker_for(name).state == "closed"
        assert not rdb.exists(keys_for(name)[0])
        assert name not in [s["name"] for s in breakers.all_breakers()]
    finally:
        breakers.remove_listener(seen.append)
    expected = [("closed", "open"), ("open", "closed"), ("closed", "open"), ("open", "closed")]
    assert [(c.old, c.new) for c in seen] == expected
    assert events(rdb, name) == expected
    fields = rdb.xrange(EVENTS_KEY)[-1][1]
    assert set(fields) == {b"name", b"from", b"to", b"at"} and float(fields[b"at"]) > 0


def test_overrides_apply_per_name(settings):
    settings.BREAKER_OPEN_SECONDS = 30
    settings.BREAKER_OVERRIDES = {"webhook:crm.example.com": {"open_seconds": 60.0}}
    assert breakers.config_for("webhook:crm.example.com").open_seconds == 60
    assert breakers.config_for("webhook:other.example.com").open_seconds == 30


# --- 6. round trips and the view of a closed breaker ------------------------
# Two breakers of one name on two clients are what two processes hold: each has its own view.


@pytest.fixture
def own_redis(tmp_path) -> Iterator[redis.Redis]:
    """A Redis of this test's own, so INFO commandstats counts this test's commands and nobody else's."""
    from devtools.services import start_redis

    server = start_redis(tmp_path / "redis")
    client = redis.Redis.from_url(server.url)
    try:
        yield client
    finally:
        client.close()
        server.stop()


def commands(client: redis.Redis) -> Counter[str]:
    """Commands the server ran, those inside scripts included, not counting INFO and CONFIG themselves."""
    stats = client.info("commandstats")
    return Counter(
        {
            key.removeprefix("cmdstat_"): value["calls"]
            for key, value in stats.items()
            if key not in ("cmdstat_info", "cmdstat_config")
        }
    )


def test_a_closed_breaker_call_costs_one_round_trip_and_four_commands(own_redis, new_name):
    url = own_redis.connection_pool.connection_kwargs
    guard = breaker(new_name(), f"redis://{url['host']}:{url['port']}/0")
    assert guard.call(ok) == "ok"  # loads the scripts, registers the breaker, sets the keys' TTLs
    own_redis.config_resetstat()

    for _ in range(10):
        assert guard.call(ok) == "ok"
    # One EVALSHA per call (the record; the acquire was the view's), and inside it HMGET, TIME, ZADD.
    assert commands(own_redis) == Counter({"evalsha": 10, "hmget": 10, "time": 10, "zadd": 10})
    assert guard.snapshot()["calls"] == 11

    # A failure earns no view: the next call asks Redis first (acquire, record), then it is one again.
    with pytest.raises(ConnectionError):
        guard.call(fail)
    own_redis.config_resetstat()
    assert guard.call(ok) == "ok"
    assert commands(own_redis)["evalsha"] == 2
    own_redis.config_resetstat()
    assert guard.call(ok) == "ok"
    assert commands(own_redis)["evalsha"] == 1


def test_a_breaker_opened_elsewhere_is_seen_within_a_second(new_name):
    name = new_name()
    here = breaker(name, settings.REDIS_URL, consecutive_failures=3, open_seconds=30)
    elsewhere = breaker(name, settings.REDIS_URL, consecutive_failures=3, open_seconds=30)

    # Opened after this process's last success: at most the one call its view lets through
    # (none if the view has run out meanwhile), whose record tells it; then refused.
    assert here.call(ok) == "ok"
    elsewhere.open()
    made: list[int] = []
    for _ in range(3):
        with contextlib.suppress(CircuitOpen):
            here.call(made.append, 1)
    assert len(made) <= 1
    assert guard_state(elsewhere) == ("open", 0), "the call let through on the view is not counted"

    # Opened and left alone for VIEW_SECONDS: the view is gone, no call is made.
    elsewhere.close()
    assert here.call(ok) == "ok"
    elsewhere.open()
    time.sleep(VIEW_SECONDS)
    with pytest.raises(CircuitOpen):
        here.call(pytest.fail, "an open breaker must not run the call")


def guard_state(guard: breakers.Breaker) -> tuple[str, int]:
    snap = guard.snapshot()
    return snap["state"], snap["calls"]


def test_the_view_never_outlives_the_open_time_so_probes_stay_bounded(new_name):
    """Closed -> open -> half-open within a second: the view must not let a call bypass the probe slots."""
    name = new_name()
    options = {"consecutive_failures": 1, "open_seconds": 0.3, "half_open_probes": 1, "probe_timeout_seconds": 5}
    here, elsewhere = breaker(name, settings.REDIS_URL, **options), breaker(name, settings.REDIS_URL, **options)
    assert here.call(ok) == "ok"
    with pytest.raises(ConnectionError):
        elsewhere.call(fail)
    time.sleep(0.35)
    assert elsewhere.storage.acquire().kind == "probe"  # the only slot
    with pytest.raises(CircuitOpen):
        here.call(pytest.fail, "the probe slot is taken")
