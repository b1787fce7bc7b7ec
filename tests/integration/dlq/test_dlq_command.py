"""`manage.py dlq requeue --reason` as a child process, with a real worker
carrying the requeue through, seen in `pipeline_stats --json`."""

from __future__ import annotations

import io
from datetime import datetime

from django.core.management import call_command

from dlq.models import DeadLetter
from leads.models import Business
from tests.support.dead_letters import dead_letters, manage, stats
from tests.support.events import encode, event
from tests.support.processes import wait_until
from whatsapp.models import ProcessedMessage


def test_requeue_by_reason_requeues_exactly_those_and_the_stats_follow(business, start_worker, child_env):
    late = [encode(event(f"late-{i}", business_id="late-bakery", intent="AVAILABILITY_INQUIRY")) for i in range(3)]
    dead_letters([*late, encode(event("wrong-tenant", tenant_id="tenant-other")), b"this is not json {"])
    Business.objects.create(business_id="late-bakery", tenant_id="tenant-acme", display_name="Late Bakery")
    before = stats(child_env)
    assert before["dead_letters"]["by_status"] == {"OPEN": 5}
    assert before["dead_letters"]["open_by_reason"] == {
        "unknown_business": 3,
        "tenant_mismatch": 1,
        "invalid_payload": 1,
    }
    assert before["processed"] == 0

    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("ops@example.com", "ops@example.com")
    # With Redis stopped (here: a broker URL nothing listens on) nothing is marked requeued.
    down = manage(
        {**child_env, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}, "dlq", "requeue", "--reason", "unknown_business"
    )
    assert down.returncode == 1, down.stderr
    assert "stopped: the Celery broker (Redis) cannot be reached" in down.stderr
    assert "3 of 3 left OPEN, as they were" in down.stderr
    assert stats(child_env)["dead_letters"]["by_status"] == {"OPEN": 5} and not ProcessedMessage.objects.exists()
    start_worker(concurrency=1)
    done = manage(child_env, "dlq", "requeue", "--reason", "unknown_business", "--rate", "2", "--by", "ops@example.com")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "requeued 3 of 3, 0 refused"
    wait_until(
        lambda: ProcessedMessage.objects.filter(status="PROCESSED").count() == 3,
        timeout=60,
        message="the three requeued messages to be processed",
    )

    after = stats(child_env)
    assert after["dead_letters"]["by_status"] == {"OPEN": 2, "REQUEUED": 3}
    assert after["dead_letters"]["open_by_reason"] == {"tenant_mismatch": 1, "invalid_payload": 1}
    assert after["processed"] == 3 and after["inbox"]["PROCESSED"] == 3
    requeued = DeadLetter.objects.filter(status="REQUEUED").order_by("created_at", "pk")
    assert {e.payload["processing_id"] for e in requeued} == {"late-0", "late-1", "late-2"}
    times = [datetime.fromisoformat(e.requeue_history[0]["at"]) for e in requeued]
    assert all(e.requeue_history[0]["by"] == "ops@example.com" for e in requeued)
    gaps = [(b - a).total_seconds() for a, b in zip(sorted(times), sorted(times)[1:], strict=False)]
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
