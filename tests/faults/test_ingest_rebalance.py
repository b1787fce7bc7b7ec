"""Scaling out loses nothing: several ingest processes share the consumer group,
and a rebalance (one joins, one is SIGKILLed mid-batch) neither loses nor
doubles a record. Real broker, Postgres and `ingest_kafka` processes."""

from __future__ import annotations

import random
import signal
from collections import Counter

import pytest

from tests.support import kafka
from tests.support.events import EXPECTED_REASON, encode, event, invalid_values
from tests.support.processes import wait_until
from whatsapp.models import DuplicateDelivery, ProcessedMessage

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PARTITIONS = 6
MESSAGES = 1800  # plus 100 sent twice and 100 invalid: 2,000 records
INVALID_KINDS = [
    "not_json",
    "bad_utf8",
    "missing_field",
    "wrong_type",
    "unknown_business",
    "tenant_mismatch",
    "schema_v2",
]


def records() -> tuple[list[kafka.Out], Counter]:
    """The records in the order produced, spread over the partitions, and the dead letters expected."""
    valid = [encode(event(f"rb-{i:04d}", lead_id=f"lead-{i % 53}")) for i in range(MESSAGES)]
    bad = invalid_values()
    invalid = [bad[INVALID_KINDS[i % len(INVALID_KINDS)]] for i in range(100)]
    values = valid + valid[::18] + invalid
    random.Random(11).shuffle(values)
    expected = Counter(EXPECTED_REASON[INVALID_KINDS[i % len(INVALID_KINDS)]] for i in range(100))
    return [kafka.Out(value, partition=i % PARTITIONS) for i, value in enumerate(values)], expected


def test_two_ingests_a_sigkill_and_a_newcomer_account_for_every_record_once(bootstrap, business, start_ingest):
    topic = kafka.create_topic(bootstrap, partitions=PARTITIONS)
    out, expected_dead = records()
    assert len(out) == 2000
    kafka.produce_messages(bootstrap, topic, out)
    group = "ingest-rebalance"
    # Small batches held a moment before their commit, so the run lasts long enough to
    # kill one process mid-run, likely between a batch's hand-off and its commit.
    args = ("--batch-size", "40")
    env = {"INGEST_DEBUG_COMMIT_DELAY_SECONDS": "0.5"}
    first = start_ingest(topic, *args, group=group, env=env)
    second = start_ingest(topic, *args, group=group, env=env)

    def accounted() -> int:
        return sum(len(found) for found in kafka.outcomes(topic).values())

    def has_partitions(proc) -> bool:
        lines = [line for line in proc.output().splitlines() if "ingest: assigned" in line]
        return bool(lines) and "nothing" not in lines[-1]

    # Both share the topic (the second's arrival is a rebalance), and have taken records in.
    wait_until(
        lambda: has_partitions(first) and has_partitions(second),
        timeout=90,
        message="both processes holding partitions",
    )
    wait_until(
        lambda: "taken in" in first.output() and "taken in" in second.output() and accounted() >= 300,
        timeout=90,
        message="both processes taking records in",
    )
    first.kill(signal.SIGKILL)
    first.wait(10)
    at_kill = accounted()
    assert at_kill < 2000, "the SIGKILL came after everything was read"

    third = start_ingest(topic, *args, group=group, env=env)
    ends = kafka.end_offsets(bootstrap, topic)
    assert sum(ends.values()) == 2000
    wait_until(
        lambda: accounted() >= 2000 and kafka.committed_offsets(bootstrap, topic, group) == ends,
        timeout=300,
        interval=1,
        message="every record accounted for and committed",
    )
    assert has_partitions(third), "the newcomer never took a partition"
    for proc in (second, third):
        proc.kill(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.output()[-3000:]

    # Each record is exactly one inbox row (its own), duplicate or dead letter.
    found = kafka.outcomes(topic)
    assert set(found) == {(p, o) for p, end in ends.items() for o in range(end)}
    assert {where: what for where, what in found.items() if len(what) != 1} == {}
    kinds = Counter(what[0] for what in found.values())
    assert kinds == Counter(
        {"inbox": MESSAGES, "duplicate": 100, **{f"dead letter:{reason}": n for reason, n in expected_dead.items()}}
    )
    assert set(ProcessedMessage.objects.values_list("processing_id", flat=True)) == {
        f"rb-{i:04d}" for i in range(MESSAGES)
    }
    assert DuplicateDelivery.objects.count() == 100
    assert kafka.committed_offsets(bootstrap, topic, group) == ends
