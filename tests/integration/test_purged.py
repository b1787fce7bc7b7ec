"""A pipeline task for a message whose inbox row was purged ends quietly.

Finished inbox rows are purged after INBOX_RETENTION_DAYS; a task still queued
for one (a redelivery, a re-driven chain) must end like a stopped saga: one log
line, no traceback, and Celery (and Flower) see it succeed with a result that says it
stopped, not failed, retried or ignored (an ignored task stays STARTED in Flower). Every
task of the pipeline is sent to a real worker for a row the sweeper has purged.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from tests.support.events import BUSINESS_ID, event
from tests.support.observability import json_lines
from tests.support.processes import wait_until

# reply_and_finish, and the old names kept for one release (send_reply, finish).
STEPS = ("dedupe", "intent", "execute_action", "reply_and_finish", "send_reply", "finish", "compensate")


@pytest.mark.django_db(transaction=True)
def test_every_pipeline_task_for_a_purged_message_ends_quietly(start_worker, business):
    from dlq.models import DeadLetter
    from whatsapp import tasks
    from whatsapp.models import ProcessedMessage, SagaStep
    from whatsapp.pipeline import chains
    from whatsapp.recovery.sweeper import sweep

    # One message per task, finished (processed or failed) longer ago than the retention.
    long_ago = timezone.now() - timedelta(days=settings.INBOX_RETENTION_DAYS + 1)
    ids = {step: f"purged-{step}" for step in STEPS}
    for n, (step, pid) in enumerate(ids.items()):
        row = ProcessedMessage.objects.create(
            processing_id=pid,
            status="FAILED" if step == "compensate" else "PROCESSED",
            business_id=BUSINESS_ID,
            lead_id=f"lead-{n}",
            intent="ORDER_REQUEST",
            payload=event(pid),
            saga_run=1,
            planned_run=1,
            handler="order",
            reply_text="Thanks!",
            finished_at=long_ago,
        )
        SagaStep.objects.create(message=row, saga_run=1, order=1, action="CREATE_ORDER", status="SUCCEEDED")
    assert sweep(purge=True).purged >= len(STEPS)
    assert not ProcessedMessage.objects.filter(processing_id__in=ids.values()).exists()

    worker = start_worker(concurrency=2)
    signatures = {
        "dedupe": tasks.dedupe.si(ids["dedupe"], 1),
        "intent": tasks.intent.si(ids["intent"], 1),
        "execute_action": tasks.execute_action.si(ids["execute_action"], 1, 1).set(queue="pipeline"),
        "reply_and_finish": tasks.reply_and_finish.si(ids["reply_and_finish"], 1).set(queue="whatsapp"),
        "send_reply": tasks.send_reply.si(ids["send_reply"], 1).set(queue="whatsapp"),
        "finish": tasks.finish.si(ids["finish"], 1),
        "compensate": tasks.compensate.si(ids["compensate"], 1),
    }
    task_ids = {step: chains.task_id(ids[step], 1, step) for step in STEPS}
    for step, signature in signatures.items():
        signature.set(task_id=task_ids[step]).apply_async()

    def ended() -> bool:
        """Every task has an outcome in the log: succeeded, or (a failure) raised, retried or ignored."""
        output = worker.output()
        return all(
            any(f"[{task_id}] {outcome}" in output for outcome in ("ignored", "succeeded", "raised", "retry"))
            for task_id in task_ids.values()
        )

    try:
        wait_until(ended, timeout=60, interval=0.3, message="every task to end")
    except AssertionError:
        raise AssertionError(worker.output()[-6000:]) from None
    worker.stop()
    output = worker.log_path.read_text(errors="replace")

    for bad in ("Traceback", "raised unexpected", "DoesNotExist", "Retry in", '"level": "ERROR"'):
        assert bad not in output, f"{bad!r} in the worker's output:\n{output[-6000:]}"
    lines = [line for line in json_lines(output) if line.get("logger", "").startswith("whatsapp")]
    for step, pid in ids.items():
        ours = [line for line in lines if line.get("processing_id") == pid]
        assert len(ours) == 1, (step, ours)
        assert ours[0]["level"] == "INFO" and pid in ours[0]["message"], ours[0]
        if step != "dedupe":  # dedupe cannot tell a purged row from a claimed one without another query
            assert "no inbox row" in ours[0]["message"], ours[0]
        celery = [
            line
            for line in json_lines(output)
            if task_ids[step] in json.dumps(line) and line.get("logger", "").startswith("celery")
        ]
        assert any("succeeded in" in line["message"] and "{'stopped': " in line["message"] for line in celery), (
            step,
            celery,
        )

    # Nothing was made again: no inbox row, no dead letter.
    assert not ProcessedMessage.objects.filter(processing_id__in=ids.values()).exists()
    assert not DeadLetter.objects.filter(processing_id__in=ids.values()).exists()
