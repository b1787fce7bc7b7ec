"""An action that fails by a bug (an error no executor raises on purpose) ends its Celery
task as FAILURE, and the errback every action task carries (link_error) compensates the
run and dead-letters it, on a real worker: the message is not left PROCESSING for the
sweeper to re-drive for ever. The errback reads Postgres, so running it again, or for a
run that did not fail, changes nothing."""

from __future__ import annotations

import pytest

from config.celery import app
from dlq.models import DeadLetter
from leads.models import ReviewFlag, SupportTicket
from tests.conftest import Pipeline
from tests.support.events import event
from tests.support.processes import ManagedProcess, wait_until
from whatsapp import saga
from whatsapp.models import ProcessedMessage, SagaStep
from whatsapp.pipeline import chains

pytestmark = pytest.mark.django_db(transaction=True)

BUG = {"drill": "bug"}


def steps_of(pid: str) -> list[tuple[str, str, int]]:
    return list(
        SagaStep.objects.filter(message__processing_id=pid)
        .order_by("order")
        .values_list("action", "status", "attempts")
    )


def received(worker: ManagedProcess, task_id: str) -> int:
    """How many times the worker took a delivery of this task."""
    return worker.output().count(f"[{task_id}] received")


@pytest.fixture
def drilled(bootstrap, topic, start_ingest, start_worker, business) -> Pipeline:
    """The pipeline with the test plugin's drills loaded into its worker."""
    worker = start_worker(env={"WHATSAPP_PLUGINS": "tests.support.plugins"})
    return Pipeline(bootstrap, topic, start_ingest(topic), [worker])


def test_a_bug_in_the_second_of_three_actions_compensates_the_first_and_dead_letters_once(drilled):
    worker = drilled.workers[0]
    drilled.send([event("bug-1", intent="COMPLAINT", entities=BUG)])
    drilled.wait_settled(1)

    row = ProcessedMessage.objects.get(processing_id="bug-1")
    assert (row.status, row.handler) == ("FAILED", "bug_drill"), row.last_error
    # The first compensated, the second failed, the third never ran.
    assert steps_of("bug-1") == [
        ("CREATE_SUPPORT_TICKET", "COMPENSATED", 1),
        ("DIVIDE_BY_ZERO", "FAILED", 1),
        ("FLAG_FOR_REVIEW", "PENDING", 0),
    ]
    assert SupportTicket.objects.get().status == "VOID"
    assert not ReviewFlag.objects.exists()

    entry = DeadLetter.objects.get(processing_id="bug-1")
    assert (entry.stage, entry.reason, entry.status) == ("DIVIDE_BY_ZERO", "unexpected_error", "OPEN")
    assert entry.error_message.startswith("ZeroDivisionError")
    assert "Traceback" in entry.traceback and "1 / len(context.params)" in entry.traceback
    assert [s["status"] for s in entry.saga_state["steps"]] == ["COMPENSATED", "FAILED", "PENDING"]

    # Celery saw the failing task fail (not ignored), with the stored error, and did not retry it.
    failed_id = chains.task_id("bug-1", 1, "action2-DIVIDE_BY_ZERO")
    result = app.AsyncResult(failed_id)
    assert result.state == "FAILURE"
    assert type(result.result).__name__ == "StageFailed" and "ZeroDivisionError" in str(result.result)
    assert received(worker, failed_id) == 1
    # The errback started the compensation, once, under the run's compensate id: nothing else did.
    compensate_id = chains.task_id("bug-1", 1, "compensate")
    wait_until(
        lambda: f"[{compensate_id}] succeeded" in worker.output(), timeout=30, message="the compensate task to end"
    )
    assert received(worker, compensate_id) == 1
    # The first action's task succeeded as before.
    assert app.AsyncResult(chains.task_id("bug-1", 1, "action1-CREATE_SUPPORT_TICKET")).state != "FAILURE"

    # The errback running again (a redelivered copy, the sweeper's start) changes nothing.
    chains.start_compensation("bug-1", 1)
    wait_until(
        lambda: received(worker, compensate_id) == 2 and worker.output().count(f"[{compensate_id}] succeeded") == 2,
        timeout=30,
        message="the second compensate task to end",
    )
    assert DeadLetter.objects.filter(processing_id="bug-1").count() == 1
    ticket_step = SagaStep.objects.get(message__processing_id="bug-1", action="CREATE_SUPPORT_TICKET")
    assert (ticket_step.status, ticket_step.compensation_attempts) == ("COMPENSATED", 1)


def test_the_errback_leaves_a_run_that_did_not_fail_alone(drilled):
    """A late errback for a run that finished (or moved on to another run) compensates nothing."""
    worker = drilled.workers[0]
    drilled.send([event("fine-1", intent="COMPLAINT", entities={"severity": "high"})])
    drilled.wait_settled(1)
    assert ProcessedMessage.objects.get(processing_id="fine-1").status == "PROCESSED"
    done = steps_of("fine-1")
    assert done and all(status == "SUCCEEDED" for _, status, _ in done)

    late = [chains.task_id("fine-1", run, "compensate") for run in (1, 2)]
    for run in (1, 2):
        chains.compensation_signature("fine-1", run).apply_async()
    wait_until(
        lambda: all(f"[{task_id}] succeeded" in worker.output() for task_id in late),
        timeout=30,
        message="both compensate tasks to end",
    )

    # Each ends as SUCCESS saying it stopped (not ignored, which Flower would show STARTED for ever).
    assert all(
        f"[{task_id}] succeeded" in line and "{'stopped': " in line
        for task_id in late
        for line in worker.output().splitlines()
        if f"[{task_id}] succeeded" in line
    )
    assert ProcessedMessage.objects.get(processing_id="fine-1").status == "PROCESSED"
    assert steps_of("fine-1") == done
    assert SupportTicket.objects.get().status == "OPEN"
    assert not DeadLetter.objects.filter(processing_id="fine-1").exists()


def test_an_error_around_the_executor_fails_the_step_as_unexpected(business):
    """Not only the executor's errors: a step whose action is no longer registered (a plugin
    removed between plan and run) fails the run too, so that compensation can take over,
    and compensation refuses a run until its failure is recorded."""
    row = ProcessedMessage.objects.create(
        processing_id="gone-1",
        status="PROCESSING",
        business_id=business.business_id,
        lead_id="lead-123",
        intent="COMPLAINT",
        payload=event("gone-1", intent="COMPLAINT"),
        saga_run=1,
        planned_run=1,
        handler="gone",
    )
    SagaStep.objects.create(message=row, saga_run=1, order=1, action="NO_LONGER_REGISTERED")
    with pytest.raises(saga.SagaStopped, match="no failure recorded"):
        saga.compensate_steps("gone-1", 1)

    outcome = saga.run_step("gone-1", 1, 1)

    assert outcome.failed
    assert outcome.error.startswith("LookupError: no action executor registered as 'NO_LONGER_REGISTERED'")
    row.refresh_from_db()
    assert (row.status, row.failed_stage, row.failure_reason) == (
        "PROCESSING",
        "NO_LONGER_REGISTERED",
        "unexpected_error",
    )
    assert "Traceback" in row.last_traceback
    assert steps_of("gone-1") == [("NO_LONGER_REGISTERED", "FAILED", 1)]
    assert saga.compensate_steps("gone-1", 1)
    entry = saga.write_dead_letter("gone-1", 1)
    assert entry is not None and (entry.stage, entry.reason) == ("NO_LONGER_REGISTERED", "unexpected_error")
    assert saga.write_dead_letter("gone-1", 1) == entry
    assert ProcessedMessage.objects.get(processing_id="gone-1").status == "FAILED"
