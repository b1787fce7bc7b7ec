"""The pipeline's Celery tasks: thin wrappers that let whatsapp.saga decide.

Tasks take ids, never payloads, so they read well in Flower and a redelivered
copy always acts on the current state in Postgres. Which tasks follow which,
and their ids, is whatsapp.pipeline.chains; what runs around every task (log context,
tags, timing) is whatsapp.pipeline.signals.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from celery import Task, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from config.redaction import configured_secrets
from config.task_limits import BoundedTask
from core import tracing
from dlq.models import DeadLetter
from whatsapp import saga
from whatsapp.models import ProcessedMessage
from whatsapp.pipeline.chains import actions_signature, start_compensation
from whatsapp.pipeline.lanes import BULK_LANE, NORMAL_LANE
from whatsapp.recovery import sweeper
from whatsapp.saga import statuses as delivery
from whatsapp.send import read_receipts

log = logging.getLogger(__name__)

# Every task's limits, below the broker's visibility timeout (config/task_limits.py checks,
# settings.py too): a hard and a soft time limit, and every retry's wait cut to
# TASK_MAX_RETRY_COUNTDOWN_SECONDS by BoundedTask, whatever asked for it.
LIMITS: dict[str, Any] = {
    "base": BoundedTask,
    "soft_time_limit": settings.TASK_SOFT_TIME_LIMIT_SECONDS,
    "time_limit": settings.TASK_TIME_LIMIT_SECONDS,
    "max_retry_countdown": settings.TASK_MAX_RETRY_COUNTDOWN_SECONDS,
}

# A stage that cannot reach Postgres waits and tries again.
DB_RETRY: dict[str, Any] = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 2,
    "retry_backoff_max": int(min(60, settings.TASK_MAX_RETRY_COUNTDOWN_SECONDS)),
    "retry_jitter": True,
    "max_retries": 20,
}
# The stages that retry on their own schedule (follow) for as long as it takes.
DB_RETRY_UNBOUNDED = {k: v for k, v in DB_RETRY.items() if k != "max_retries"}


def lane_of(task: Any) -> int:
    """The lane the running task was sent on, for the tasks it sends next."""
    priority = (task.request.delivery_info or {}).get("priority")
    return BULK_LANE if priority is not None and int(priority) >= BULK_LANE else NORMAL_LANE


def stop_chain(task: Any, why: str) -> dict[str, str]:
    """End the task as SUCCESS with a result that says why it stopped, and send none of its
    chain's next tasks: Celery's documented way to stop a chain from inside a task is to
    clear the request's chain (and callbacks), which it reads only after the task returns.

    Not Ignore: Celery sends no event for an ignored task, so Flower would show it
    STARTED for ever. The result is not stored (CELERY_TASK_IGNORE_RESULT); Flower shows
    it from the task-succeeded event."""
    task.request.chain = None
    task.request.callbacks = None
    return {"stopped": why}


@shared_task(name="whatsapp.dedupe", **LIMITS, bind=True, **DB_RETRY)
def dedupe(self: Task[Any, Any], processing_id: str, saga_run: int) -> dict[str, str] | None:
    """Claim the inbox row. Any state but RECEIVED stops the chain quietly:
    a duplicate delivery, or a copy Redis redelivered, does nothing."""
    with tracing.span("whatsapp.dedupe", "claim the inbox row"):
        claimed = saga.claim(processing_id, saga_run)
    if not claimed:
        log.info("dedupe: %s run %s already claimed, finished or purged; stopping this copy", processing_id, saga_run)
        return stop_chain(self, "duplicate")
    return None


# A stage that failed for good ends its task as FAILURE, so Celery and Flower show it, with
# the stored (redacted) error; the failure is already in Postgres and logged by the saga, so
# Celery logs it at INFO with no traceback (throws), and keeps it in the result backend
# (store_errors_even_if_ignored), under the task's deterministic id. Only DB_RETRY's errors
# retry, and a failed task is acknowledged (task_acks_on_failure_or_timeout), never redelivered.
FAILS_AS_FAILURE: dict[str, Any] = {"throws": (saga.StageFailed,), "store_errors_even_if_ignored": True}


@shared_task(name="whatsapp.intent", **LIMITS, bind=True, **DB_RETRY, **FAILS_AS_FAILURE)
def intent(self: Task[Any, Any], processing_id: str, saga_run: int) -> str | dict[str, str]:
    try:
        steps = saga.plan_run(processing_id, saga_run)
    except saga.SagaStopped as stopped:
        log.info("intent: %s", stopped)
        return stop_chain(self, str(stopped))
    except (OperationalError, InterfaceError):
        raise
    except Exception as exc:
        error, tb = saga.describe_failure(exc, configured_secrets())
        saga.fail(
            processing_id,
            saga_run,
            stage=DeadLetter.Stage.INTENT,
            reason=saga.reason_for(exc, retryable=False),
            error=error,
            tb=tb,
        )
        # No action ran, so there is no errback to do it: compensation only dead-letters the run.
        start_compensation(processing_id, saga_run)
        raise saga.StageFailed(error) from None
    # The planned actions go out as a chain of their own, sent from here: intent is the last
    # task of its chain, so this is what Task.replace would do, without its Ignore (which
    # would leave intent STARTED in Flower, as Celery sends no event for an ignored task).
    # The result says what replaced it, for Flower's Tasks tab.
    actions_signature(processing_id, saga_run, steps, lane=lane_of(self)).apply_async()
    return f"replaced by {len(steps)} action{'' if len(steps) == 1 else 's'}: " + (
        ", ".join(step.action for step in steps) or "none"
    )


@shared_task(
    name="whatsapp.reply_and_finish", **LIMITS, bind=True, max_retries=None, **DB_RETRY_UNBOUNDED, **FAILS_AS_FAILURE
)
def reply_and_finish(
    self: Task[Any, Any], processing_id: str, saga_run: int, mark_read: bool = True
) -> dict[str, str] | None:
    """The run's tail, after its last action, in one task on the reply queue: mark the
    message read (best effort: whatsapp.saga.read), send the reply, finish.

    Postgres, not the broker, says what is done, so a copy Redis redelivers (a worker
    SIGKILLed) or the sweeper re-drives does no harm: a finished run stops it at once, and a
    reply already sent is not sent again (its idempotency key, whatsapp.send.reply). A reply
    that fails for good is dead-lettered at stage "reply" (nothing to compensate): the task
    then fails, so Flower counts it, and the run is not finished. With mark_read False (a
    requeued reply, a retry of this task) the message is not marked read again."""
    return _reply_and_finish(self, processing_id, saga_run, mark_read=mark_read)


def _reply_and_finish(task: Any, processing_id: str, saga_run: int, *, mark_read: bool) -> dict[str, str] | None:
    try:
        message = saga.active_message(processing_id, saga_run)
    except saga.SagaStopped as stopped:
        log.info("reply_and_finish: %s", stopped)
        return stop_chain(task, str(stopped))
    if mark_read:
        saga.mark_read(message, lane=lane_of(task))
        # Task.retry sends the request's kwargs again: any retry of this task (the reply's, or
        # Postgres') skips the read receipt, which has had its try (and its own retry task).
        task.request.kwargs = {**(task.request.kwargs or {}), "mark_read": False}
    outcome = follow(
        task, "reply", lambda jitter: saga.send_reply(processing_id, saga_run, jitter=jitter, message=message)
    )
    if isinstance(outcome, dict):
        return outcome
    if outcome.failed:
        raise saga.StageFailed(outcome.error)
    try:
        with tracing.span("whatsapp.finish", "mark the message processed"):
            saga.finish_run(processing_id, saga_run)
    except saga.SagaStopped as stopped:
        log.info("finish: %s", stopped)
        return stop_chain(task, str(stopped))
    return None


# The old tail, two tasks (send_reply, then finish, which sent mark_read): registered for one
# release more, for the copies still queued in Redis when the workers are upgraded (or a
# requeue sent by a web process not yet upgraded). Each does the whole tail, which is
# idempotent; drop them in the release after.
@shared_task(
    name="whatsapp.send_reply", **LIMITS, bind=True, max_retries=None, **DB_RETRY_UNBOUNDED, **FAILS_AS_FAILURE
)
def send_reply(
    self: Task[Any, Any], processing_id: str, saga_run: int, mark_read: bool = True
) -> dict[str, str] | None:
    """Deprecated, kept for one release for tasks queued under this name: the whole tail
    (reply_and_finish; mark_read as there, for its own retries). The old chain's finish,
    next, is then not sent: this did it."""
    stopped = _reply_and_finish(self, processing_id, saga_run, mark_read=mark_read)
    return stopped if stopped is not None else stop_chain(self, "finished here (whatsapp.reply_and_finish)")


@shared_task(name="whatsapp.finish", **LIMITS, bind=True, max_retries=None, **DB_RETRY_UNBOUNDED, **FAILS_AS_FAILURE)
def finish(self: Task[Any, Any], processing_id: str, saga_run: int, mark_read: bool = True) -> dict[str, str] | None:
    """Deprecated, kept for one release for tasks queued under this name: the whole tail
    (reply_and_finish; mark_read as there, for its own retries). Queued only once the old
    send_reply succeeded, so the reply is not sent again (its idempotency key); the message
    is marked read, as the old finish did."""
    return _reply_and_finish(self, processing_id, saga_run, mark_read=mark_read)


@shared_task(name="whatsapp.sweep", **LIMITS)
def sweep() -> dict:
    return sweeper.sweep().as_dict()


@shared_task(
    name="whatsapp.execute_action", **LIMITS, bind=True, max_retries=None, **DB_RETRY_UNBOUNDED, **FAILS_AS_FAILURE
)
def execute_action(self: Task[Any, Any], processing_id: str, saga_run: int, order: int) -> dict[str, str] | None:
    """Run one planned action. When the run fails here (the action for good, or a bug), the
    task fails, and its errback (whatsapp.pipeline.chains.actions_signature) starts the compensation:
    this task does not start it too."""
    outcome = follow(self, "action", lambda jitter: saga.run_step(processing_id, saga_run, order, jitter=jitter))
    if isinstance(outcome, dict):
        return outcome
    if outcome.failed:
        raise saga.StageFailed(outcome.error)
    return None


def follow(task: Any, stage: str, step: Callable[[float], saga.StepOutcome]) -> saga.StepOutcome | dict[str, str]:
    """Run a saga step and do what its outcome says: carry on, retry later, or stop the
    chain when the run moved on (then the task's result, stop_chain's). A failed outcome
    is returned, for the task to end as it should."""
    try:
        outcome = step(random.uniform(0.9, 1.1))
    except saga.SagaStopped as stopped:
        log.info("%s: %s", stage, stopped)
        return stop_chain(task, str(stopped))
    if outcome.retry_in is not None:
        raise task.retry(countdown=outcome.retry_in)
    return outcome


@shared_task(name="whatsapp.compensate", **LIMITS, bind=True, max_retries=None, **DB_RETRY_UNBOUNDED)
def compensate(self: Task[Any, Any], processing_id: str, saga_run: int) -> dict[str, str] | None:
    """Undo what the failed run did, in reverse, then dead-letter it. Reads
    everything from Postgres, so running it twice is the same as once."""
    try:
        if not saga.compensate_steps(processing_id, saga_run):
            delay = saga.RETRY_DELAYS[min(self.request.retries, len(saga.RETRY_DELAYS) - 1)] * random.uniform(0.9, 1.1)
            raise self.retry(countdown=delay)
        entry = saga.write_dead_letter(processing_id, saga_run)
    except saga.SagaStopped as stopped:  # purged, or no failure recorded in this run
        log.info("compensate: %s", stopped)
        return stop_chain(self, str(stopped))
    if entry is not None:
        log.warning(
            "dead-lettered %s run %s at %s (%s) as DLQ #%s",
            processing_id,
            saga_run,
            entry.stage,
            entry.reason,
            entry.pk,
        )
    return None


@shared_task(name="whatsapp.apply_delivery_status", **LIMITS, bind=True, max_retries=None, **DB_RETRY_UNBOUNDED)
def apply_delivery_status(self: Task[Any, Any], status_id: int, attempt: int = 0) -> str | None:
    """Apply one stored delivery status to its reply (whatsapp.saga.statuses). A status whose
    wamid no reply has yet is looked at again a few times, then counted unknown."""
    outcome = delivery.apply(status_id, attempt=attempt)
    if outcome is None:
        raise self.retry(countdown=delivery.retry_delay(attempt), kwargs={"attempt": attempt + 1})
    return outcome


@shared_task(name="whatsapp.mark_read", **LIMITS, bind=True, max_retries=None)
def mark_read(
    self: Task[Any, Any],
    processing_id: str,
    saga_run: int,
    phone_number_id: str,
    message_id: str,
    lead_id: str = "",
    intent: str = "",
    attempt: int = 0,
    refusals: int = 0,
) -> None:
    """Mark the customer's message read again, after a first try (whatsapp.saga.read) that
    failed retryably: best effort (whatsapp.send.read_receipts)."""
    tracing.note_message(ProcessedMessage(processing_id=processing_id, lead_id=lead_id, intent=intent))
    wait = read_receipts.mark_read(phone_number_id, message_id, attempt=attempt, refusals=refusals)
    if wait is not None:
        delay, refused = wait
        # refused None: the pacer's wait, which costs neither a try nor a refusal.
        kwargs = {"attempt": attempt + (1 if refused is False else 0), "refusals": refusals + (1 if refused else 0)}
        raise self.retry(countdown=delay * random.uniform(0.9, 1.1), kwargs=kwargs)
