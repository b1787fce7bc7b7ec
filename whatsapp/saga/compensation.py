"""Undoing a failed run: its succeeded actions, in reverse order, each at most once."""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core import tracing
from core.metrics import counters
from whatsapp.actions.base import ActionContext
from whatsapp.actions.registry import executors
from whatsapp.models import SagaStep
from whatsapp.saga.run import (
    RETRY_DELAYS,
    SagaStopped,
    action_context,
    describe_failure,
    inbox_row,
    secrets_of,
)

log = logging.getLogger(__name__)


def compensate_steps(processing_id: str, saga_run: int) -> bool:
    """Undo the run's succeeded steps in reverse order. Returns True when no
    step is left to try again (each is COMPENSATED or COMPENSATION_FAILED).

    Only a run with its failure recorded is undone (SagaStopped otherwise): the compensate
    task is also the errback of every action task, which Celery runs for any failure of
    that task, including a late copy's after its run was requeued or finished."""
    message = inbox_row(processing_id)
    if message.saga_run != saga_run or not message.failed_stage:
        raise SagaStopped(
            f"{processing_id} has no failure recorded in run {saga_run} (it is {message.status} "
            f"in run {message.saga_run}); nothing to compensate"
        )
    pending_retry = False
    steps = SagaStep.objects.filter(message=message, saga_run=saga_run, status=SagaStep.Status.SUCCEEDED)
    for step in steps.order_by("-order"):
        executor = executors.get(step.action)
        context: ActionContext | None = None
        try:
            if executor.transactional:
                with transaction.atomic(), tracing.span("whatsapp.compensate", step.action, action=step.action):
                    locked = SagaStep.objects.select_for_update().get(pk=step.pk)
                    if locked.status != SagaStep.Status.SUCCEEDED:
                        continue
                    context = action_context(message, locked)
                    executor.compensate(context, locked.result or {})
                    locked.status = SagaStep.Status.COMPENSATED
                    locked.compensation_attempts += 1
                    locked.save(update_fields=["status", "compensation_attempts", "updated_at"])
                    counters.compensation(step.action, "compensated")
            else:
                # It calls an outside service: no transaction open meanwhile (see run_step).
                context = action_context(message, step)
                with tracing.span("whatsapp.compensate", step.action, action=step.action):
                    executor.compensate(context, step.result or {})
                if SagaStep.objects.filter(pk=step.pk, status=SagaStep.Status.SUCCEEDED).update(
                    status=SagaStep.Status.COMPENSATED,
                    compensation_attempts=F("compensation_attempts") + 1,
                    updated_at=timezone.now(),
                ):
                    counters.compensation(step.action, "compensated")
        except Exception as exc:
            error, _ = describe_failure(exc, secrets_of(context))
            with transaction.atomic():
                locked = SagaStep.objects.select_for_update().get(pk=step.pk)
                locked.compensation_attempts += 1
                locked.compensation_error = error
                retryable = executor.is_retryable(exc)
                if retryable and locked.compensation_attempts <= len(RETRY_DELAYS):
                    pending_retry = True
                else:
                    locked.status = SagaStep.Status.COMPENSATION_FAILED
                    counters.compensation(step.action, "failed")
                locked.save(update_fields=["status", "compensation_attempts", "compensation_error", "updated_at"])
            log.error("compensating %s of %s failed: %s", step.action, processing_id, error)
            if pending_retry:
                # Stop here: later steps must not be undone before this one is.
                return False
    return True
