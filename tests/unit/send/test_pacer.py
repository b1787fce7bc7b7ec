"""The pacer (whatsapp.send.pacer) against the real Redis: the number's and the pair's limits,
the slowdown a throttling answer causes and its recovery, and the order waiters go in."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings as django_settings

from whatsapp.send import pacer

CUSTOMER = "15550009876"
OTHER = "15550001111"
NOW_MS = int(time.time() * 1000)


@pytest.fixture
def number(settings) -> Iterator[str]:
    """A phone-number id of this test's own, its keys deleted afterwards; the real limits."""
    settings.WHATSAPP_NUMBER_MPS = 80
    settings.WHATSAPP_PAIR_INTERVAL_SECONDS = 6.0
    settings.WHATSAPP_PAIR_BURST = 1
    settings.WHATSAPP_PACE_MARGIN_SECONDS = 0.0
    pnid = str(uuid.uuid4().int)[:15]
    yield pnid
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    for key in client.scan_iter(f"pace:{{{pnid}}}:*"):
        client.delete(key)
    client.close()


def send(pnid: str, token: str, recipient: str | None = CUSTOMER, priority: int = pacer.NO_WINDOW) -> float:
    """0 when granted, else the wait in seconds."""
    try:
        pacer.reserve(pnid, token=token, recipient=recipient, priority=priority)
    except pacer.PaceWait as wait:
        return wait.seconds
    return 0.0


def test_the_number_allows_its_rate_then_makes_the_next_send_wait(number, settings):
    settings.WHATSAPP_NUMBER_MPS = 3
    settings.WHATSAPP_PAIR_INTERVAL_SECONDS = 0
    assert [send(number, f"t{i}", f"1555000{i:04d}") for i in range(3)] == [0.0, 0.0, 0.0]
    with pytest.raises(pacer.PaceWait) as waited:
        pacer.reserve(number, token="t3", recipient="15550000003")
    assert waited.value.limit == "number" and 0 < waited.value.seconds <= 1.0


def test_one_customer_waits_the_pair_interval_while_another_is_served(number):
    assert send(number, "a1") == 0.0
    second = send(number, "a2")
    assert 5.0 < second <= 6.0
    assert send(number, "b1", OTHER) == 0.0
    # The customer's number is not in any key.
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    names = [key.decode() for key in client.scan_iter(f"pace:{{{number}}}:*")]
    assert names and not any(CUSTOMER in name or OTHER in name for name in names)


def test_a_pair_burst_borrows_from_the_intervals_after_it(number, settings):
    settings.WHATSAPP_PAIR_BURST = 3
    assert [send(number, f"b{i}") for i in range(3)] == [0.0, 0.0, 0.0]
    # Three messages' worth of intervals are owed: the fourth waits for all of them.
    assert send(number, "b3") > 2 * 6.0


def test_read_receipts_take_a_slot_of_the_number_but_none_of_the_pair(number, settings):
    settings.WHATSAPP_NUMBER_MPS = 2
    assert send(number, "reply") == 0.0
    assert send(number, "read:1", recipient=None, priority=pacer.READ_RECEIPT) == 0.0
    assert send(number, "read:2", recipient=None, priority=pacer.READ_RECEIPT) > 0


def test_a_throttling_answer_slows_the_number_down_and_it_recovers(number, settings, monkeypatch):
    settings.WHATSAPP_PAIR_INTERVAL_SECONDS = 0
    monkeypatch.setattr(pacer, "RECOVERY_HALF_LIFE_SECONDS", 0.2)
    assert send(number, "before", None) == 0.0
    pacer.throttled(number, pacer.NUMBER_CODE)
    # Held for one slowed window (1 s x 2), though the number had 79 slots left.
    slowed = send(number, "during", None)
    assert slowed > 1.0
    time.sleep(slowed + 0.3)
    # The slowdown has decayed: the number sends at its rate again, a burst of sends at once.
    assert [send(number, f"after{i}", None) for i in range(10)] == [0.0] * 10


def test_a_throttling_answer_slows_the_pair_down_and_it_recovers(number, settings, monkeypatch):
    settings.WHATSAPP_PAIR_INTERVAL_SECONDS = 0.2
    settings.WHATSAPP_PAIR_BURST = 45
    monkeypatch.setattr(pacer, "RECOVERY_HALF_LIFE_SECONDS", 0.2)
    assert send(number, "p0") == 0.0
    pacer.throttled(number, pacer.PAIR_CODE, recipient=CUSTOMER)
    # No burst now: the pair waits a doubled interval; another customer does not.
    assert send(number, "p1") > 0.2
    assert send(number, "q1", OTHER) == 0.0
    time.sleep(1.5)
    assert [send(number, f"p{i}") for i in range(2, 6)] == [0.0] * 4


def test_the_reply_whose_window_closes_soonest_goes_first(number, settings):
    settings.WHATSAPP_NUMBER_MPS = 1
    settings.WHATSAPP_PAIR_INTERVAL_SECONDS = 0
    assert send(number, "first", None) == 0.0
    soon, later, latest = NOW_MS + 60_000, NOW_MS + 3_600_000, NOW_MS + 7_200_000
    # Three replies wait, arriving latest first.
    waits = {
        "latest": send(number, "latest", None, latest),
        "soon": send(number, "soon", None, soon),
        "later": send(number, "later", None, later),
    }
    assert all(wait > 0 for wait in waits.values())
    # The one closing soonest is told the shortest wait (a countdown is a hint from the queue
    # as it was on arrival; the order is decided when they come back).
    assert waits["soon"] == min(waits.values())
    time.sleep(waits["soon"] + 0.05)
    # A slot is free: the replies closing later come back first and still wait; the soonest goes.
    assert send(number, "latest", None, latest) > 0
    assert send(number, "later", None, later) > 0
    assert send(number, "soon", None, soon) == 0.0
    time.sleep(1.05)
    assert send(number, "latest", None, latest) > 0
    assert send(number, "later", None, later) == 0.0


def test_off_makes_no_redis_call(number, settings, monkeypatch):
    settings.WHATSAPP_NUMBER_MPS = 0
    settings.WHATSAPP_PAIR_INTERVAL_SECONDS = 0
    monkeypatch.setattr(pacer, "link", lambda: pytest.fail("the pacer asked Redis while off"))
    for i in range(200):
        pacer.reserve(number, token=f"t{i}", recipient=CUSTOMER)
