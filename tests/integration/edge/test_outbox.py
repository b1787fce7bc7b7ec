"""The outbox relay as a process of its own, on a real Kafka topic: killed with SIGKILL
before publishing and after the broker acknowledged, and facing a broker that is not there.
Messages are stored the way the webhook stores them (store_delivery on Meta's payloads)."""

from __future__ import annotations

import signal

import pytest

from tests.support import meta
from tests.support.processes import wait_until
from tests.support.webhook import copies_per_processing_id, requests_on
from whatsapp.contracts.request import processing_id_for
from whatsapp.edge.webhook.payload import parse_delivery
from whatsapp.edge.webhook.store import store_delivery
from whatsapp.models import InboundMessage

pytestmark = pytest.mark.slow


def store(count: int, *, sender: str = meta.CUSTOMER) -> list[str]:
    """`count` messages stored as the webhook stores them, in deliveries of five; their wamids."""
    wamids: list[str] = []
    for first in range(0, count, 5):
        messages = [meta.text_message(f"message {n}", sender=sender) for n in range(first, min(first + 5, count))]
        body = meta.encode(meta.message_delivery(*messages))
        store_delivery(body, parse_delivery(body))
        wamids += [m["id"] for m in messages]
    return wamids


def published() -> int:
    return InboundMessage.objects.filter(state=InboundMessage.State.PUBLISHED).count()


def test_the_webhooks_notify_wakes_the_relay_at_once(wa_business, bootstrap, request_topic, start_relay):
    """With a poll of a minute, only the NOTIFY sent on commit can publish within seconds."""
    import time

    relay = start_relay(request_topic, env={"RELAY_POLL_INTERVAL_SECONDS": "60"})
    wait_until(lambda: "listening on channel" in relay.output(), timeout=30, message="the relay listening")
    started = time.monotonic()
    wamids = store(1)
    wait_until(lambda: published() == 1, timeout=10, interval=0.05, message="published on NOTIFY")
    assert time.monotonic() - started < 5
    assert copies_per_processing_id(requests_on(bootstrap, request_topic)) == {processing_id_for(wamids[0]): 1}


def test_a_relay_killed_before_publishing_loses_nothing_and_doubles_nothing(
    wa_business, bootstrap, request_topic, start_relay
):
    wamids = store(40)
    assert InboundMessage.objects.pending().count() == 40
    # Each round waits a second between claiming its rows and producing them: the kill
    # lands in that window, with rows claimed (locked) but not yet on the topic.
    relay = start_relay(request_topic, "--batch-size", "5", env={"RELAY_DEBUG_PUBLISH_DELAY_SECONDS": "1.0"})
    wait_until(lambda: published() >= 10, timeout=60, message="two rounds published")
    relay.kill(signal.SIGKILL)
    relay.wait(10)
    left = InboundMessage.objects.pending().count()
    assert 0 < left < 40, "killed mid-stream"
    assert published() + left == 40

    start_relay(request_topic, "--batch-size", "5")
    wait_until(lambda: published() == 40, timeout=60, message="every message published")
    copies = copies_per_processing_id(requests_on(bootstrap, request_topic))
    assert copies == {processing_id_for(w): 1 for w in wamids}, "each stored message exactly once on the topic"
    assert not InboundMessage.objects.exclude(publish_attempts=1).exists()


def test_a_relay_killed_after_the_broker_acknowledged_republishes_the_same_processing_ids(
    wa_business, bootstrap, request_topic, start_relay
):
    """The one window that doubles: published, not yet marked. The copies carry the same
    processing_id and body, which the consumer dedupes; nothing is lost."""
    wamids = store(10)
    relay = start_relay(request_topic, "--batch-size", "5", env={"RELAY_DEBUG_MARK_DELAY_SECONDS": "30"})
    wait_until(lambda: "acknowledged; marking them published" in relay.output(), timeout=60, message="an ack")
    relay.kill(signal.SIGKILL)
    relay.wait(10)
    assert published() == 0 and InboundMessage.objects.pending().count() == 10
    first_round = requests_on(bootstrap, request_topic)
    assert len(first_round) == 5

    start_relay(request_topic, "--batch-size", "5")
    wait_until(lambda: published() == 10, timeout=60, message="every message published")
    events = requests_on(bootstrap, request_topic)
    copies = copies_per_processing_id(events)
    again = {event["processing_id"] for event in first_round}
    assert set(copies) == {processing_id_for(w) for w in wamids}
    assert {pid for pid, n in copies.items() if n == 2} == again
    assert all(n == 1 for pid, n in copies.items() if pid not in again)
    by_id: dict[str, list[dict]] = {}
    for event in events:
        by_id.setdefault(event["processing_id"], []).append(event)
    assert all(copy == group[0] for group in by_id.values() for copy in group), "copies are identical"


def test_a_broker_that_is_not_there_leaves_rows_unpublished_until_one_is(
    wa_business, bootstrap, request_topic, start_relay
):
    from devtools.services import free_port

    wamids = store(5)
    relay = start_relay(
        request_topic,
        env={
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "RELAY_DELIVERY_TIMEOUT_MS": "1000",
            "RELAY_MAX_BACKOFF_SECONDS": "1",
        },
    )
    wait_until(
        lambda: not InboundMessage.objects.filter(publish_attempts__lt=2).exists(),
        timeout=60,
        message="two failed attempts at every row",
    )
    assert relay.alive()
    assert "not acknowledged by the broker" in relay.output()
    assert InboundMessage.objects.pending().count() == 5 and published() == 0
    assert all(row.last_error for row in InboundMessage.objects.all())
    relay.kill(signal.SIGTERM)
    assert relay.wait(30) == 0

    start_relay(request_topic)
    wait_until(lambda: published() == 5, timeout=60, message="published once the broker is there")
    assert copies_per_processing_id(requests_on(bootstrap, request_topic)) == {processing_id_for(w): 1 for w in wamids}
    assert not InboundMessage.objects.exclude(last_error="").exists()


def test_a_row_that_is_not_a_valid_request_is_rejected_once_and_the_rest_go_out(
    wa_business, bootstrap, request_topic, start_relay
):
    good = store(2)
    # The webhook now keeps a sender it cannot read as UNREADABLE; a row an older version
    # stored (or someone edited) can still break the contract: "12" is too short for a number.
    bad = store(1)
    InboundMessage.objects.filter(wamid=bad[0]).update(wa_id="12")
    start_relay(request_topic)
    wait_until(lambda: published() == 2, timeout=60, message="the valid ones published")
    wait_until(
        lambda: InboundMessage.objects.filter(state=InboundMessage.State.REJECTED).count() == 1,
        timeout=30,
        message="the invalid one rejected",
    )
    row = InboundMessage.objects.get(wamid=bad[0])
    assert row.state == InboundMessage.State.REJECTED and "customer.wa_id" in row.last_error
    assert row.publish_attempts == 1
    assert copies_per_processing_id(requests_on(bootstrap, request_topic)) == {processing_id_for(w): 1 for w in good}


def test_a_database_outage_pauses_the_relay_and_it_catches_up(
    wa_business, bootstrap, request_topic, start_relay, child_env
):
    from django.db import connection

    from tests.support.proxy import FaultProxy

    db = connection.settings_dict
    proxy = FaultProxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432))
    try:
        url = child_env["DATABASE_URL"].replace(f":{db['PORT'] or 5432}/", f":{proxy.port}/")
        relay = start_relay(
            request_topic, env={"DATABASE_URL": url, "DATABASE_CONNECT_TIMEOUT": "2", "RELAY_MAX_BACKOFF_SECONDS": "1"}
        )
        wamids = store(5)
        wait_until(lambda: published() == 5, timeout=60, message="the first five published")
        proxy.cut()
        wamids += store(5)
        wait_until(lambda: relay.output().count("database unavailable") >= 2, timeout=30, message="retries")
        assert relay.alive() and published() == 5
        proxy.restore()
        wait_until(lambda: published() == 10, timeout=60, message="caught up")
        assert relay.alive()
        copies = copies_per_processing_id(requests_on(bootstrap, request_topic))
        assert copies == {processing_id_for(w): 1 for w in wamids}
    finally:
        proxy.close()
