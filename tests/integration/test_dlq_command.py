"""`manage.py dlq`: selection, output, exit codes, and a requeue by reason that
a real worker carries through, seen in `pipeline_stats --json`."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from dlq.models import DeadLetter
from leads.models import Business
from tests.conftest import ROOT
from tests.support.events import encode, event, invalid_values
from tests.support.processes import wait_until
from whatsapp.intake import take_in
from whatsapp.kafka import Record
from whatsapp.models import ProcessedMessage


def dead_letters(values: list[bytes], first_offset: int = 0) -> list[DeadLetter]:
    """Dead letters written by the real intake code, as ingest writes them."""
    records = [Record(topic="ai.process.result", partition=1, offset=first_offset + i, value=v, key=b"lead-1",
                      timestamp=timezone.now()) for i, v in enumerate(values)]
    take_in(records)
    return list(DeadLetter.objects.filter(kafka_offset__in=[r.offset for r in records]).order_by("kafka_offset"))


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def stats(env: dict[str, str]) -> dict:
    done = manage(env, "pipeline_stats", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_requeue_by_reason_requeues_exactly_those_and_the_stats_follow(business, start_worker, child_env):
    late = [encode(event(f"late-{i}", business_id="late-bakery", intent="AVAILABILITY_INQUIRY")) for i in range(3)]
    dead_letters([*late, encode(event("wrong-tenant", tenant_id="tenant-other")), b"this is not json {"])
    Business.objects.create(business_id="late-bakery", tenant_id="tenant-acme", display_name="Late Bakery")
    before = stats(child_env)
    assert before["dead_letters"]["by_status"] == {"OPEN": 5}
    assert before["dead_letters"]["open_by_reason"] == {"unknown_business": 3, "tenant_mismatch": 1, "invalid_payload": 1}
    assert before["processed"] == 0

    start_worker(concurrency=1)
    done = manage(child_env, "dlq", "requeue", "--reason", "unknown_business", "--rate", "2", "--by", "ops@example.com")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "requeued 3 of 3, 0 refused"
    wait_until(lambda: ProcessedMessage.objects.filter(status="PROCESSED").count() == 3, timeout=60,
               message="the three requeued messages to be processed")

    after = stats(child_env)
    assert after["dead_letters"]["by_status"] == {"OPEN": 2, "REQUEUED": 3}
    assert after["dead_letters"]["open_by_reason"] == {"tenant_mismatch": 1, "invalid_payload": 1}
    assert after["processed"] == 3 and after["inbox"]["PROCESSED"] == 3
    requeued = DeadLetter.objects.filter(status="REQUEUED").order_by("created_at", "pk")
    assert {e.payload["processing_id"] for e in requeued} == {"late-0", "late-1", "late-2"}
    times = [datetime.fromisoformat(e.requeue_history[0]["at"]) for e in requeued]
    assert all(e.requeue_history[0]["by"] == "ops@example.com" for e in requeued)
    gaps = [(b - a).total_seconds() for a, b in zip(sorted(times), sorted(times)[1:])]
    assert min(gaps) >= 0.3, f"paced at 2 a second, got gaps {gaps}"

    refused = manage(child_env, "dlq", "requeue", "--reason", "invalid_payload")
    assert refused.returncode == 1
    assert "the record is still invalid" in refused.stderr and "1 of 1 not requeued" in refused.stderr
    assert stats(child_env)["dead_letters"] == after["dead_letters"]

    usage = manage(child_env, "dlq", "requeue")
    assert usage.returncode == 2 and "say which entries" in usage.stderr


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("dlq", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_list_show_resolve_discard_and_purge():
    unknown = dead_letters([encode(event(f"late-{i}", business_id="late-bakery")) for i in range(2)])
    bad_utf8, not_json = dead_letters([invalid_values()["bad_utf8"], b"not json"], first_offset=10)
    old_closed, old_open = dead_letters([b"old 1", b"old 2"], first_offset=20)
    DeadLetter.objects.filter(pk__in=[old_closed.pk, old_open.pk]).update(created_at=timezone.now() - timedelta(days=100))
    DeadLetter.objects.filter(pk=old_closed.pk).update(status="DISCARDED")

    listed = json.loads(run("list", "--json", "--reason", "unknown_business"))
    assert {e["id"] for e in listed} == {e.pk for e in unknown}
    assert {e["processing_id"] for e in listed} == {"late-0", "late-1"} and "raw_value" not in listed[0]
    assert {e["id"] for e in json.loads(run("list", "--json", "--status", "DISCARDED"))} == {old_closed.pk}
    yesterday = (timezone.now() - timedelta(days=1)).date().isoformat()
    recent = json.loads(run("list", "--json", "--since", yesterday))
    assert {e["id"] for e in recent} == {*(e.pk for e in unknown), bad_utf8.pk, not_json.pk}
    assert [e["id"] for e in json.loads(run("list", "--json", "--search", "late-1"))] == [unknown[1].pk]
    assert {e["id"] for e in json.loads(run("list", "--json", "--business", "late-bakery"))} == {e.pk for e in unknown}
    assert len(json.loads(run("list", "--json", "--limit", "2"))) == 2
    table = run("list", "--reason", "unknown_business")
    assert "late-0" in table and "late-1" in table and "not json" not in table

    shown = json.loads(run("show", str(unknown[0].pk), "--json"))
    assert shown["payload"]["processing_id"] == "late-0" and shown["reason"] == "unknown_business"
    assert shown["kafka"]["offset"] == 0 and shown["kafka"]["key"] == {"encoding": "utf-8", "data": "lead-1"}
    assert json.loads(run("show", str(bad_utf8.pk), "--json"))["raw_value"]["encoding"] == "base64"
    assert "late-bakery" in run("show", str(unknown[0].pk))
    with pytest.raises(CommandError) as missing:
        run("show", "999999")
    assert missing.value.returncode == 1

    assert "resolved 1 of 1" in run("resolve", str(unknown[0].pk), "--note", "entered by hand", "--by", "ana")
    unknown[0].refresh_from_db()
    assert (unknown[0].status, unknown[0].resolution_note, unknown[0].closed_by) == ("RESOLVED", "entered by hand", "ana")
    with pytest.raises(CommandError) as twice:
        run("resolve", str(unknown[0].pk), "--note", "again")
    assert twice.value.returncode == 1 and "1 of 1 not resolved" in str(twice.value)
    assert "would mark 3 discarded" in run("discard", "--reason", "invalid_payload", "--note", "junk", "--dry-run")
    assert "discarded 2 of 2" in run("discard", "--reason", "invalid_payload", "--since", yesterday, "--note", "junk")
    assert set(DeadLetter.objects.filter(pk__in=[bad_utf8.pk, not_json.pk]).values_list("status", flat=True)) == {"DISCARDED"}
    assert DeadLetter.objects.get(pk=old_open.pk).status == "OPEN", "older than --since, not selected"
    orphan = DeadLetter.objects.create(processing_id="purged-long-ago", stage="NOTIFY_SALES", reason="non_retryable",
                                       saga_run=1, payload=json.loads(encode(event("purged-long-ago"))))
    why = io.StringIO()
    with pytest.raises(CommandError) as gone:
        call_command("dlq", "requeue", str(orphan.pk), stdout=io.StringIO(), stderr=why)
    assert gone.value.returncode == 1 and "purged-long-ago has no inbox row any more" in why.getvalue()
    orphan.refresh_from_db()
    assert orphan.status == "OPEN"
    for usage in (["requeue"], ["requeue", str(unknown[1].pk), "--reason", "x"], ["resolve", "--note", "no selection"]):
        with pytest.raises(CommandError) as error:
            run(*usage)
        assert error.value.returncode == 2, usage

    assert run("purge", "--older-than", "30", "--dry-run").strip() == "would delete 1"
    assert run("purge", "--older-than", "30").strip() == "deleted 1"
    assert not DeadLetter.objects.filter(pk=old_closed.pk).exists()
    assert DeadLetter.objects.filter(pk=old_open.pk).exists(), "OPEN entries are kept"
    assert run("purge", "--older-than", "30", "--include-open").strip() == "deleted 1"
    assert DeadLetter.objects.count() == 5
