"""Kafka ingest against a real broker, Postgres and Redis: every record ends
as an inbox row, a counted duplicate or a dead letter, and offsets are
committed only for what was handed off."""

from __future__ import annotations

import random
import signal
from collections import Counter

import pytest

from dlq.models import DeadLetter
from tests.support import kafka
from tests.support.events import EXPECTED_REASON, invalid_values
from tests.support.ingest import committed_total, queued, valid_records
from tests.support.processes import wait_until
from whatsapp.models import DuplicateDelivery, ProcessedMessage

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_record_ends_as_inbox_row_duplicate_or_dead_letter(
    business, topic, bootstrap, start_ingest, redis_client
):
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
    assert (
        tenant.kafka_topic == topic and tenant.kafka_offset is not None and tenant.error_message.startswith("tenant_id")
    )

    # Each customer's first message was handed to the pipeline once, the rest wait their turn
    # (whatsapp.pipeline.turns: 37 customers); the group committed everything.
    assert queued(redis_client) == 37
    assert ProcessedMessage.objects.filter(status="WAITING").count() == 1000 - 37
    assert kafka.committed_offsets(bootstrap, topic, "ingest-accounting") == kafka.end_offsets(bootstrap, topic)


def test_idle_exit_waits_for_nothing_to_read_not_for_a_slow_batch(business, topic, bootstrap, start_ingest):
    """A batch that takes longer than --idle-exit (a busy database, say) is not
    idleness: ingest reads on until the topic is drained."""
    kafka.produce(bootstrap, topic, valid_records(60))
    proc = start_ingest(topic, "--idle-exit", "2", "--batch-size", "20", env={"INGEST_DEBUG_COMMIT_DELAY_SECONDS": "3"})
    assert proc.wait(120) == 0, proc.output()[-3000:]
    assert ProcessedMessage.objects.count() == 60
    assert "60 new" in proc.output()


def test_sigterm_finishes_cleanly(business, topic, bootstrap, start_ingest):
    kafka.produce(bootstrap, topic, valid_records(20))
    group = "ingest-sigterm"
    proc = start_ingest(topic, group=group)
    wait_until(lambda: committed_total(bootstrap, topic, group) == 20, timeout=90, message="records committed")
    proc.kill(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert "consumed 20 records" in proc.output()
