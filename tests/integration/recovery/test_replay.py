"""`manage.py replay` re-feeds Kafka records through the ingest path: the
dedupe key stops what was already processed, and --force runs it again as a
new saga run that acts once, never twice within a run."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
from django.core.management import call_command

from leads.models import Order
from tests.support.events import event
from tests.support.poison import POISON
from tests.support.processes import wait_until
from whatsapp.models import DuplicateDelivery, ProcessedMessage, SagaStep

pytestmark = pytest.mark.django_db(transaction=True)


def replay_json(*args: str) -> dict:
    out = io.StringIO()
    call_command("replay", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


def state(pids: list[str]) -> dict:
    """What a replay must not change unless forced: runs, statuses, effects."""
    return {
        "rows": sorted(
            ProcessedMessage.objects.filter(processing_id__in=pids).values_list("processing_id", "saga_run", "status")
        ),
        "steps": SagaStep.objects.filter(message__processing_id__in=pids).count(),
        "orders": sorted(Order.objects.filter(processing_id__in=pids).values_list("processing_id", "saga_run")),
        "duplicates": DuplicateDelivery.objects.count(),
    }


def test_replay_by_time_dedupes_and_force_runs_once_more(pipeline, child_env, settings):
    early = [event(f"early-{i}", lead_id=f"lead-e{i}") for i in range(2)]
    pipeline.send(early)
    pipeline.wait_settled(2)
    time.sleep(1.0)
    since = datetime.now(UTC).isoformat()
    time.sleep(0.2)
    pids = [f"replay-{i}" for i in range(3)]
    events = [event(pid, lead_id=f"lead-r{i}") for i, pid in enumerate(pids)]
    pipeline.send([*events, events[0]])  # the upstream service sent replay-0 twice
    pipeline.wait_settled(5)
    wait_until(lambda: DuplicateDelivery.objects.count() == 1, timeout=30, message="the duplicate to be counted")
    before = state(pids)
    assert before["orders"] == [(pid, 1) for pid in pids]
    early_before = state([e["processing_id"] for e in early])

    # A dry run lists the time range (and nothing before it) and changes nothing.
    listed = replay_json("--topic", pipeline.topic, "--since", since, "--dry-run")
    assert sorted(r["processing_id"] for r in listed["records"]) == sorted([*pids, "replay-0"])
    assert {r["outcome"] for r in listed["records"]} == {"duplicate"}
    assert state(pids) == before

    # Replayed for real: the dedupe marks every record duplicate and nothing runs again.
    result = replay_json("--topic", pipeline.topic, "--since", since)
    assert (result["read"], result["duplicate"], result["new"], result["rerun"], result["in_flight"]) == (4, 4, 0, 0, 0)
    assert state(pids) == before

    # Written to a file, not a terminal, it says how far it has read, in plain lines.
    settings.COMMAND_PROGRESS_SECONDS = 0
    out = io.StringIO()
    call_command("replay", "--topic", pipeline.topic, "--since", since, stdout=out)
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"read (\d+)/\1, done in \d+ s", lines[-2]), lines  # the whole topic, 7 records or fewer
    assert lines[-1].startswith("replay: " + pipeline.topic + ": 4 records in range: 0 new, 4 duplicate"), lines

    # Offsets select exactly one record.
    row = ProcessedMessage.objects.get(processing_id="replay-1")
    one = replay_json(
        "--topic",
        pipeline.topic,
        "--partition",
        str(row.kafka_partition),
        "--from-offset",
        str(row.kafka_offset),
        "--to-offset",
        str(row.kafka_offset),
        "--dry-run",
    )
    assert [(r["processing_id"], r["offset"]) for r in one["records"]] == [("replay-1", row.kafka_offset)]

    # --force is refused without confirmation, with exit code 2.
    refused = subprocess.run(
        [sys.executable, "manage.py", "replay", "--topic", pipeline.topic, "--since", since, "--force"],
        env=child_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2, refused.stderr
    assert "--force will re-run 3 already processed messages (of 4 records in the range)" in refused.stderr
    assert "--yes" in refused.stderr
    assert state(pids) == before

    # Confirmed: each message runs once more as run 2; replay-0's second record adds no second run.
    forced = replay_json("--topic", pipeline.topic, "--since", since, "--force", "--yes")
    assert (forced["rerun"], forced["duplicate"]) == (3, 1)
    wait_until(
        lambda: ProcessedMessage.objects.filter(processing_id__in=pids, saga_run=2, status="PROCESSED").count() == 3,
        timeout=60,
        message="the forced runs to finish",
    )
    after = state(pids)
    assert after["orders"] == sorted([(pid, run) for pid in pids for run in (1, 2)])  # one order per run
    assert after["steps"] == 2 * before["steps"]
    per_run = Counter(
        SagaStep.objects.filter(message__processing_id__in=pids).values_list(
            "message__processing_id", "saga_run", "action"
        )
    )
    assert set(per_run.values()) == {1}  # every action once per run
    assert after["duplicates"] == before["duplicates"]
    assert state([e["processing_id"] for e in early]) == early_before  # outside the range: untouched


def test_replay_isolates_what_it_cannot_take_in_and_reports_conflicts(
    business, bootstrap, poison_trigger, redis_client
):
    """As in ingest: a record that fails inside intake is dead-lettered as unprocessable and
    the rest of its batch goes on; another business's record holding a processing_id is
    reported as a conflict (invalid), never as a duplicate."""
    from dlq.models import DeadLetter
    from leads.models import Business
    from tests.support import kafka
    from tests.support.events import TENANT_ID, encode
    from whatsapp.ingest.intake import take_in
    from whatsapp.kafka import Record

    Business.objects.create(business_id="other-shop", tenant_id=TENANT_ID, display_name="Other")
    take_in([Record("elsewhere", 0, 0, encode(event("held-1", lead_id="lead-h")))])
    topic = kafka.create_topic(bootstrap, partitions=1)
    values = [encode(event(f"rp-{i}", lead_id=f"lead-{i}")) for i in range(6)]
    values[3] = encode(event(POISON))
    values.append(encode(event("held-1", lead_id="lead-x", business_id="other-shop")))
    kafka.produce(bootstrap, topic, [(None, v) for v in values])
    selection = ("--topic", topic, "--partition", "0", "--from-offset", "0")

    listed = replay_json(*selection, "--dry-run")
    assert [(r["offset"], r["outcome"], r["detail"]) for r in listed["records"]][-1] == (
        6,
        "invalid",
        "processing_id_conflict",
    )

    result = replay_json(*selection)
    assert (result["read"], result["new"], result["invalid"], result["duplicate"]) == (7, 5, 2, 0)
    assert set(ProcessedMessage.objects.values_list("processing_id", flat=True)) == {"held-1"} | {
        f"rp-{i}" for i in range(6) if i != 3
    }
    assert sorted(DeadLetter.objects.values_list("kafka_offset", "reason")) == [
        (3, "unprocessable"),
        (6, "processing_id_conflict"),
    ]
    assert not DuplicateDelivery.objects.exists()
