"""Stage 3: one planned action, executed once per run however often its task is delivered."""

from __future__ import annotations

import logging
import sys

from django.db import IntegrityError, transaction
from django.utils import timezone

from core import tracing
from core.breakers import CircuitOpen
from core.errors import DATABASE_UNAVAILABLE
from core.metrics import counters
from dlq.models import DeadLetter
from whatsapp.actions.base import ActionContext, ActionExecutor
from whatsapp.actions.registry import executors
from whatsapp.models import ProcessedMessage, SagaStep
from whatsapp.saga.run import (
    RETRY_DELAYS,
    MessagePurged,
    SagaStopped,
    StepOutcome,
    action_context,
    active_message,
    describe_failure,
    fail,
    reason_for,
    retry_delay,
    secrets_of,
)

log = logging.getLogger(__name__)
# Losing the database or the run is not a failure of the step (see run_step).
_NOT_A_STEP_FAILURE: tuple[type[BaseException], ...] = (SagaStopped, *DATABASE_UNAVAILABLE)


def step_message(step: SagaStep) -> ProcessedMessage:
    """The inbox row of a step, with its lead and its business's version: the one
    begin_attempt read with the step, else read now, in one query."""
    message = step.message if SagaStep.message.is_cached(step) else ProcessedMessage.objects.row(pk=step.message_id)
    if message is None:
        raise MessagePurged(str(step.message_id))
    tracing.note_message(message)
    return message


class _AlreadyDone(Exception):
    """Another delivery of this step marked it SUCCEEDED first: roll this one's effect back."""


def run_step(processing_id: str, saga_run: int, order: int, *, jitter: float = 1.0) -> StepOutcome:
    """Execute one step. Returns done, a retry delay, or failed (then the failure is
    recorded on the run, and the caller's task hands it to compensation).

    An error of this code itself (not of the executor, whose errors _attempt classifies)
    fails the step too, as unexpected_error: a bug does not get better by re-driving the
    message, which is what the sweeper would do with a run left PROCESSING. Losing the
    database or the run is not a failure of the step: the task retries, or stops."""
    try:
        return _attempt(processing_id, saga_run, order, jitter)
    except _NOT_A_STEP_FAILURE:
        raise
    except Exception as exc:
        return _failed_unexpectedly(processing_id, saga_run, order, exc)


def _attempt(processing_id: str, saga_run: int, order: int, jitter: float) -> StepOutcome:
    """One attempt at the step.

    A transactional executor runs inside the transaction that marks the step SUCCEEDED,
    so the step never claims what did not happen. Any other (one that calls an outside
    service) runs with no transaction open, and the step is marked afterwards; its
    effect rows keep it idempotent. Two deliveries of one step running at once make
    one effect: the effect's unique key lets only one commit, and the step is marked
    only while it is still PENDING."""
    step = SagaStep.objects.begin_attempt(processing_id, saga_run, order, timezone.now())
    if step is None:
        return _not_runnable(processing_id, saga_run, order)
    attempt = step.attempts
    executor = executors.get(step.action)
    tracing.tag_task(action=step.action)
    context: ActionContext | None = None
    try:
        message = step_message(step)
        context = action_context(message, step)
        with tracing.span("whatsapp.action", step.action, action=step.action):
            if executor.transactional:
                with transaction.atomic():
                    result = executor.execute(context)
                    if not _mark_succeeded(step, result):
                        raise _AlreadyDone()
            else:
                result = executor.execute(context)
                if not _mark_succeeded(step, result):
                    return StepOutcome(done=True)
        log.info("action %s of %s succeeded (attempt %d)", step.action, processing_id, attempt)
        return StepOutcome(done=True)
    except _AlreadyDone:
        return StepOutcome(done=True)
    except CircuitOpen as refused:
        # The service was not called: give the attempt back and wait out the open time.
        _give_back_attempt(step.pk)
        log.info(
            "action %s of %s waits %.1fs for breaker %s", step.action, processing_id, refused.remaining, refused.name
        )
        return StepOutcome(done=False, retry_in=refused.countdown())
    except IntegrityError:
        # A concurrent delivery of this step stored the effect first (its unique key).
        if SagaStep.objects.filter(pk=step.pk, status=SagaStep.Status.SUCCEEDED).exists():
            return StepOutcome(done=True)
        return _failed_attempt(step, executor, context, attempt, jitter, processing_id, saga_run)
    except Exception:  # every failure is classified, none escapes silently
        return _failed_attempt(step, executor, context, attempt, jitter, processing_id, saga_run)


def _mark_succeeded(step: SagaStep, result: dict) -> bool:
    updated = SagaStep.objects.filter(pk=step.pk, status=SagaStep.Status.PENDING).update(
        status=SagaStep.Status.SUCCEEDED, result=result, error="", updated_at=timezone.now()
    )
    if updated:
        counters.action(step.action, "succeeded")
    return bool(updated)


def _not_runnable(processing_id: str, saga_run: int, order: int) -> StepOutcome:
    """Why begin_attempt found nothing to run: the step is done, or the run has stopped."""
    message = active_message(processing_id, saga_run)  # SagaStopped / MessagePurged if the run is over
    status = (
        SagaStep.objects.filter(message=message, saga_run=saga_run, order=order)
        .values_list("status", flat=True)
        .first()
    )
    if status == SagaStep.Status.SUCCEEDED:
        return StepOutcome(done=True)
    raise SagaStopped(f"step {order} of {processing_id} is {status or 'missing'}")


def _failed_attempt(
    step: SagaStep,
    executor: ActionExecutor,
    context: ActionContext | None,
    attempt: int,
    jitter: float,
    processing_id: str,
    saga_run: int,
) -> StepOutcome:
    exc = sys.exc_info()[1]
    assert exc is not None
    # The executor's decision (core.errors.is_retryable, with its own retryable errors); a lost
    # race on the effect's unique key is worth another look too.
    retryable = executor.is_retryable(exc) or isinstance(exc, IntegrityError)
    error, tb = describe_failure(exc, secrets_of(context))
    SagaStep.objects.filter(pk=step.pk).update(error=error, traceback=tb, updated_at=timezone.now())
    if retryable and attempt <= len(RETRY_DELAYS):
        delay = retry_delay(attempt, exc, jitter)
        log.warning(
            "action %s of %s failed (attempt %d), retrying in %.1fs: %s",
            step.action,
            processing_id,
            attempt,
            delay,
            error,
        )
        return StepOutcome(done=False, retry_in=delay)
    reason = reason_for(exc, retryable=retryable)
    log.error(
        "action %s of %s failed for good (%s, attempt %d): %s", step.action, processing_id, reason, attempt, error
    )
    fail(processing_id, saga_run, stage=step.action, reason=reason, error=error, tb=tb, failed_step=step.pk)
    return StepOutcome(done=False, failed=True, error=error)


def _failed_unexpectedly(processing_id: str, saga_run: int, order: int, exc: Exception) -> StepOutcome:
    """Record an error raised around the executor (a bug) as the step's failure."""
    step = SagaStep.objects.filter(message__processing_id=processing_id, saga_run=saga_run, order=order).first()
    context: ActionContext | None = None
    if step is not None:
        try:
            context = action_context(step_message(step), step)
        except Exception:  # only wanted for the secrets to take out of the error
            context = None
    error, tb = describe_failure(exc, secrets_of(context))
    stage = step.action if step is not None else DeadLetter.Stage.PIPELINE
    log.error("action %s of %s failed unexpectedly: %s", stage, processing_id, error)
    if step is not None:
        SagaStep.objects.filter(pk=step.pk).update(error=error, traceback=tb, updated_at=timezone.now())
    # A step that succeeded before the error stays SUCCEEDED, so that compensation undoes it.
    pending = step is not None and step.status == SagaStep.Status.PENDING
    fail(
        processing_id,
        saga_run,
        stage=stage,
        reason=DeadLetter.Reason.UNEXPECTED_ERROR,
        error=error,
        tb=tb,
        failed_step=step.pk if step is not None and pending else None,
    )
    return StepOutcome(done=False, failed=True, error=error)


def _give_back_attempt(step_pk: int) -> None:
    with transaction.atomic():
        step = SagaStep.objects.select_for_update().get(pk=step_pk)
        step.attempts -= 1
        step.attempt_log = [*step.attempt_log[:-1], {**step.attempt_log[-1], "refused_by_breaker": True}]
        step.save(update_fields=["attempts", "attempt_log", "updated_at"])
