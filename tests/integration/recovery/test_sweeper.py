"""The sweeper re-drives messages whose Celery tasks were lost, from what
Postgres says they did, and never twice at once."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from leads.models import LeadActivity, Order
from tests.support.events import encode, event
from tests.support.processes import wait_until
from whatsapp import saga
from whatsapp.ingest.intake import take_in
from whatsapp.kafka import Record
from whatsapp.models import ProcessedMessage, SagaStep

pytestmark = pytest.mark.django_db(transaction=True)


def take_in_directly(pids: list[str], **overrides) -> None:
    """Rows as ingest leaves them, but with their Celery tasks lost (never enqueued)."""
    records = [Record("t", 0, i, encode(event(pid, lead_id=f"lead-{pid}", **overrides))) for i, pid in enumerate(pids)]
    take_in(records)


def age(pids: list[str], seconds: int = 600) -> None:
    old = timezone.now() - timedelta(seconds=seconds)
    ProcessedMessage.objects.filter(processing_id__in=pids).update(updated_at=old)
    SagaStep.objects.filter(message__processing_id__in=pids).update(updated_at=old)


def run_sweep(child_env, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "manage.py", "sweep", "--json", *args],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_lost_tasks_are_redriven_from_the_inbox(business, start_worker, child_env, redis_client):
    received = [f"lost-{i}" for i in range(5)]
    take_in_directly(received)
    # One message got as far as its first action before its tasks vanished.
    take_in_directly(["half-done"])
    assert saga.claim("half-done", 1)
    saga.plan_run("half-done", 1)
    assert saga.run_step("half-done", 1, 1).done  # CREATE_ORDER ran; NOTIFY_SALES never did
    assert Order.objects.count() == 1
    # And one whose actions all ran and whose tail task (reply, finish) was lost.
    take_in_directly(["tail-lost"])
    assert saga.claim("tail-lost", 1)
    for step in saga.plan_run("tail-lost", 1):
        assert saga.run_step("tail-lost", 1, step.order).done
    age([*received, "half-done", "tail-lost"])
    redis_client.flushdb()  # as if Redis restarted empty

    start_worker()
    result = run_sweep(child_env)
    assert result["stuck"] == 7
    assert result["redriven"] == {"restarted": 5, "resumed": 2}
    wait_until(
        lambda: ProcessedMessage.objects.filter(status="PROCESSED").count() == 7,
        timeout=60,
        message="re-driven messages to finish",
    )
    assert Order.objects.filter(processing_id="half-done").count() == 1
    assert SagaStep.objects.get(message__processing_id="half-done", order=1).attempts == 1
    # The succeeded actions were not sent again, and each run finished once.
    assert set(SagaStep.objects.filter(message__processing_id="tail-lost").values_list("attempts", flat=True)) == {1}
    assert Order.objects.filter(processing_id="tail-lost").count() == 1
    for pid in ("half-done", "tail-lost"):
        assert LeadActivity.objects.filter(processing_id=pid, kind="message_processed").count() == 1
    assert run_sweep(child_env)["stuck"] == 0


def test_recent_and_busy_rows_are_left_alone(business, child_env):
    take_in_directly(["fresh"])
    take_in_directly(["slow"])
    assert saga.claim("slow", 1)
    saga.plan_run("slow", 1)
    age(["slow"])
    SagaStep.objects.filter(message__processing_id="slow").update(updated_at=timezone.now())
    assert run_sweep(child_env)["stuck"] == 0


def test_concurrent_sweepers_redrive_each_row_once(business, child_env):
    pids = [f"many-{i}" for i in range(300)]
    take_in_directly(pids)
    age(pids)
    procs = [
        subprocess.Popen(
            [sys.executable, "manage.py", "sweep", "--json", "--no-purge"],
            env=child_env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert sum(r["stuck"] for r in results) == 300
    assert sum(sum(r["redriven"].values()) for r in results) == 300


def test_purges_finished_rows_past_retention(business, child_env, settings):
    take_in_directly(["old-done", "new-done", "old-stuck"])
    long_ago = timezone.now() - timedelta(days=31)
    ProcessedMessage.objects.filter(processing_id="old-done").update(status="PROCESSED", finished_at=long_ago)
    ProcessedMessage.objects.filter(processing_id="new-done").update(status="PROCESSED", finished_at=timezone.now())
    result = run_sweep(child_env, "--stuck-after", "100000")
    assert result["purged"] >= 1
    assert set(ProcessedMessage.objects.values_list("processing_id", flat=True)) == {"new-done", "old-stuck"}
