"""Kafka ingest against a real broker, Postgres and Redis: every record ends
as an inbox row, a counted duplicate or a dead letter, and offsets are
committed only for what was handed off."""
from __future__ import annotations

import json
import random
import signal
from collections import Counter

import pytest
from django.conf import settings

from dlq.models import DeadLetter
from leads.models import Order, Product
from tests.support import kafka
from tests.support.events import BUSINESS_ID, EXPECTED_REASON, encode, event, invalid_values
from tests.support.processes import wait_until
from tests.support.proxy import FaultProxy
from whatsapp.models import DuplicateDelivery, ProcessedMessage

pytestmark = pytest.mark.django_db(transaction=True)


def queued(redis_client) -> int:
    """Tasks waiting in the pipeline queue, on any priority (kombu keeps a
    Redis list per priority step: "pipeline", "pipeline\x06\x163", ...)."""
    return sum(redis_client.llen(key) for key in redis_client.keys("pipeline*"))


def valid_records(count: int, prefix: str = "p") -> list[tuple[bytes, bytes]]:
    records = []
    for i in range(count):
        lead = f"lead-{i % 37}"
        records.append((lead.encode(), encode(event(f"{prefix}-{i:05d}", lead_id=lead))))
    return records


def committed_total(bootstrap: str, topic: str, group: str) -> int:
    return sum(max(o, 0) for o in kafka.committed_offsets(bootstrap, topic, group).values())


def test_every_record_ends_as_inbox_row_duplicate_or_dead_letter(business, topic, bootstrap, start_ingest, redis_client):
    valid = valid_records(1000)
    duplicates = valid[::10]
    bad = invalid_values()
    labels = sorted(bad)
    invalid = [(None, bad[labels[i % len(labels)]]) for i in range(50)]
    tail = invalid + duplicates
    random.Random(7).shuffle(tail)
    kafka.produce(bootstrap, topic, valid + tail)

    proc = start_ingest(topic, "--idle-exit", "5", "--batch-size", "200", group="ingest-accounting")
    assert proc.wait(240) == 0, proc.output()[-3000:]

    assert ProcessedMessage.objects.count() == 1000
    assert set(ProcessedMessage.objects.values_list("processing_id", flat=True)) == {f"p-{i:05d}" for i in range(1000)}
    assert DuplicateDelivery.objects.count() == 100
    expected = Counter(EXPECTED_REASON[labels[i % len(labels)]] for i in range(50))
    assert Counter(DeadLetter.objects.values_list("reason", flat=True)) == expected
    assert set(DeadLetter.objects.values_list("stage", flat=True)) == {"ingest"}
    assert "1000 new, 0 re-read, 100 duplicates, 50 dead-lettered" in proc.output()

    # The raw bytes are kept exactly, even when they are not UTF-8.
    bad_utf8 = DeadLetter.objects.filter(raw_value=bad["bad_utf8"])
    assert bad_utf8.exists()
    assert "UTF-8" in bad_utf8.first().error_message
    tenant = DeadLetter.objects.filter(reason="tenant_mismatch").first()
    assert tenant.kafka_topic == topic and tenant.kafka_offset is not None and tenant.error_message.startswith("tenant_id")

    # Each new row was handed to the pipeline once; the group committed everything.
    assert queued(redis_client) == 1000
    assert kafka.committed_offsets(bootstrap, topic, "ingest-accounting") == kafka.end_offsets(bootstrap, topic)


def test_idle_exit_waits_for_nothing_to_read_not_for_a_slow_batch(business, topic, bootstrap, start_ingest):
    """A batch that takes longer than --idle-exit (a busy database, say) is not
    idleness: ingest reads on until the topic is drained."""
    kafka.produce(bootstrap, topic, valid_records(60))
    proc = start_ingest(topic, "--idle-exit", "2", "--batch-size", "20",
                        env={"INGEST_DEBUG_COMMIT_DELAY_SECONDS": "3"})
    assert proc.wait(120) == 0, proc.output()[-3000:]
    assert ProcessedMessage.objects.count() == 60
    assert "60 new" in proc.output()


@pytest.mark.slow
def test_sigkill_after_handoff_before_commit_loses_and_doubles_nothing(
    business, topic, bootstrap, start_ingest, start_worker, redis_client
):
    kafka.produce(bootstrap, topic, valid_records(300))
    group = "ingest-killed"
    first = start_ingest(topic, "--batch-size", "100", group=group,
                         env={"INGEST_DEBUG_COMMIT_DELAY_SECONDS": "120"})
    wait_until(lambda: ProcessedMessage.objects.count() > 0 and queued(redis_client) > 0,
               timeout=90, message="the first batch stored and enqueued")
    stored = wait_until(lambda: ProcessedMessage.objects.count() == queued(redis_client)
                        and ProcessedMessage.objects.count(), timeout=30, message="the handoff to finish")
    assert committed_total(bootstrap, topic, group) == 0
    first.kill(signal.SIGKILL)
    first.wait(10)

    second = start_ingest(topic, "--idle-exit", "5", group=group)
    assert second.wait(180) == 0, second.output()[-3000:]
    assert f"{300 - stored} new, {stored} re-read, 0 duplicates" in second.output()
    assert ProcessedMessage.objects.count() == 300
    assert set(ProcessedMessage.objects.values_list("processing_id", flat=True)) == {f"p-{i:05d}" for i in range(300)}
    assert DuplicateDelivery.objects.count() == 0
    assert kafka.committed_offsets(bootstrap, topic, group) == kafka.end_offsets(bootstrap, topic)

    # The re-read rows were enqueued again; a real worker runs each message once.
    Product.objects.filter(sku="SD-01").update(stock=10_000)
    start_worker()
    wait_until(lambda: ProcessedMessage.objects.filter(status="PROCESSED").count() == 300, timeout=300,
               message="all messages processed")
    assert ProcessedMessage.objects.exclude(attempts=1).count() == 0
    assert Order.objects.count() == 300


def test_database_outage_pauses_ingest_without_committing(business, topic, bootstrap, start_ingest, child_env):
    from django.db import connection

    db = connection.settings_dict
    proxy = FaultProxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432))
    try:
        url = child_env["DATABASE_URL"].replace(f":{db['PORT'] or 5432}/", f":{proxy.port}/")
        group = "ingest-db-outage"
        kafka.produce(bootstrap, topic, valid_records(100, prefix="a"))
        proc = start_ingest(topic, "--batch-size", "50", group=group,
                            env={"DATABASE_URL": url, "INGEST_MAX_BACKOFF_SECONDS": "2"})
        wait_until(lambda: committed_total(bootstrap, topic, group) == 100, timeout=90, message="first 100 committed")

        proxy.cut()
        kafka.produce(bootstrap, topic, valid_records(100, prefix="b"))
        wait_until(lambda: "partitions paused" in proc.output(), timeout=30, message="ingest to notice the outage")
        wait_until(lambda: proc.output().count("retrying in") >= 3, timeout=30, message="several retries")
        assert proc.alive()
        assert committed_total(bootstrap, topic, group) == 100
        assert ProcessedMessage.objects.count() == 100

        proxy.restore()
        wait_until(lambda: committed_total(bootstrap, topic, group) == 200, timeout=60, message="catch-up")
        assert ProcessedMessage.objects.count() == 200
        assert "resumed" in proc.output()
        proc.kill(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert kafka.committed_offsets(bootstrap, topic, group) == kafka.end_offsets(bootstrap, topic)
    finally:
        proxy.close()


def test_broker_outage_pauses_ingest_without_committing(business, topic, bootstrap, start_ingest, child_env,
                                                        redis_client):
    """A batch's chains go to Redis in one call; when it fails on the connection, that is an
    outage like the database's: nothing committed, nothing dead-lettered, the batch retried."""
    from urllib.parse import urlsplit

    broker = urlsplit(child_env["REDIS_URL"])
    proxy = FaultProxy(broker.hostname or "127.0.0.1", broker.port or 6379)
    try:
        url = child_env["REDIS_URL"].replace(f":{broker.port or 6379}/", f":{proxy.port}/")
        group = "ingest-broker-outage"
        kafka.produce(bootstrap, topic, valid_records(100, prefix="a"))
        proc = start_ingest(topic, "--batch-size", "50", group=group,
                            env={"CELERY_BROKER_URL": url, "INGEST_MAX_BACKOFF_SECONDS": "2"})
        wait_until(lambda: committed_total(bootstrap, topic, group) == 100, timeout=90, message="first 100 committed")

        proxy.cut()
        kafka.produce(bootstrap, topic, valid_records(100, prefix="b"))
        wait_until(lambda: "partitions paused" in proc.output(), timeout=60, message="ingest to notice the outage")
        wait_until(lambda: proc.output().count("retrying in") >= 3, timeout=60, message="several retries")
        assert proc.alive()
        assert committed_total(bootstrap, topic, group) == 100
        assert not DeadLetter.objects.exists()

        proxy.restore()
        wait_until(lambda: committed_total(bootstrap, topic, group) == 200, timeout=90, message="catch-up")
        assert ProcessedMessage.objects.count() == 200 and not DeadLetter.objects.exists()
        sent = {json.loads(m)["headers"]["id"] for key in redis_client.keys("pipeline*")
                for m in redis_client.lrange(key, 0, -1)}
        assert sent == {f"{p}-{i:05d}:1:dedupe" for p in "ab" for i in range(100)}
        proc.kill(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proxy.close()


def test_a_batch_publish_cut_off_from_redis_is_an_outage(redis_client):
    """kombu reports a failed batch publish as BatchPublishError (delivery uncertain); one that
    failed on the connection is an outage to wait out, not a record to dead-letter."""
    from urllib.parse import urlsplit

    from kombu import Connection

    from whatsapp.intake import is_outage

    broker = urlsplit(settings.REDIS_URL)
    proxy = FaultProxy(broker.hostname or "127.0.0.1", broker.port or 6379)
    try:
        with Connection(settings.REDIS_URL.replace(f":{broker.port or 6379}/", f":{proxy.port}/")) as connection:
            producer = connection.Producer()
            with producer.batch():
                producer.publish({"n": 1}, routing_key="outage-probe")
            proxy.cut()
            with pytest.raises(Exception) as caught:
                with producer.batch():
                    producer.publish({"n": 2}, routing_key="outage-probe")
        assert type(caught.value).__name__ == "BatchPublishError"
        assert is_outage(caught.value)
    finally:
        proxy.close()
    assert redis_client.llen("outage-probe") == 1


def test_sigterm_finishes_cleanly(business, topic, bootstrap, start_ingest):
    kafka.produce(bootstrap, topic, valid_records(20))
    group = "ingest-sigterm"
    proc = start_ingest(topic, group=group)
    wait_until(lambda: committed_total(bootstrap, topic, group) == 20, timeout=90, message="records committed")
    proc.kill(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert "consumed 20 records" in proc.output()


def test_a_processing_id_held_by_another_business_is_a_conflict_not_a_duplicate(business):
    """processing_id is unique across businesses: another business's record with it is
    dead-lettered as processing_id_conflict, kept once, and refused on requeue; the same
    business's copy is still a duplicate."""
    from dlq.requeue import RequeueRefused, requeue
    from leads.models import Business
    from tests.support.events import TENANT_ID
    from whatsapp.intake import take_in
    from whatsapp.kafka import Record

    Business.objects.create(business_id="other-shop", tenant_id=TENANT_ID, display_name="Other")
    ours = encode(event("shared-1", lead_id="lead-a"))
    theirs = encode(event("shared-1", lead_id="lead-b", business_id="other-shop"))
    first = take_in([Record("t.conflict", 0, 1, ours),
                     Record("t.conflict", 1, 1, theirs),   # the same batch
                     Record("t.conflict", 0, 2, ours)])   # our own copy again
    later = take_in([Record("t.conflict", 2, 5, theirs)])  # a later batch
    again = take_in([Record("t.conflict", 2, 5, theirs)])  # read again after a crash

    assert (first.created, first.duplicates, dict(first.dead_lettered)) == (1, 1, {"processing_id_conflict": 1})
    assert dict(later.dead_lettered) == {"processing_id_conflict": 1} and later.duplicates == 0
    assert dict(again.dead_lettered) == {"processing_id_conflict": 1}
    assert ProcessedMessage.objects.get().business_id == BUSINESS_ID
    assert list(DuplicateDelivery.objects.values_list("kafka_partition", "kafka_offset")) == [(0, 2)]
    entries = DeadLetter.objects.order_by("kafka_partition")
    assert [(e.reason, e.stage, e.business_id, e.processing_id, e.kafka_partition) for e in entries] == [
        ("processing_id_conflict", "ingest", "other-shop", "shared-1", 1),
        ("processing_id_conflict", "ingest", "other-shop", "shared-1", 2)]
    assert "another business" in entries[0].error_message
    with pytest.raises(RequeueRefused, match="processing_id_conflict"):
        requeue(entries[0].pk, by="test")
    assert DeadLetter.objects.get(pk=entries[0].pk).status == "OPEN"
