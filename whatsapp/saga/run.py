"""A saga run's inbox row and what every stage shares: whether the row is still this
run's, the retry schedule, how a failure is described, and recording it."""

from __future__ import annotations

import logging
import traceback as traceback_module
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from config.redaction import configured_secrets, redact
from core import tracing
from core.errors import ActionError
from core.metrics import counters
from dlq.models import DeadLetter
from leads import directory
from leads.models import Business, CustomerIds, Lead
from whatsapp.actions.base import ActionContext
from whatsapp.contracts.result import AIResultEvent
from whatsapp.models import ProcessedMessage, SagaStep

log = logging.getLogger(__name__)

# Seconds before the 2nd, 3rd and 4th attempt of a retryable failure.
RETRY_DELAYS: tuple[float, ...] = (1.0, 5.0, 15.0)


class SagaStopped(Exception):
    """The message is no longer in this run's hands (finished, failed, requeued)."""


class MessagePurged(SagaStopped):
    """The inbox row is gone: finished rows are purged after INBOX_RETENTION_DAYS, so
    a task still queued for one (a late redelivery, a re-driven chain) has nothing to do."""

    def __init__(self, processing_id: str) -> None:
        super().__init__(
            f"{processing_id} has no inbox row (finished rows are purged after INBOX_RETENTION_DAYS); nothing to do"
        )


class PermanentStageError(Exception):
    """A stage other than an action failed in a way no retry can fix."""


class StageFailed(Exception):
    """Raised by a task whose stage failed for good, once the failure is in Postgres, so that
    Celery (and Flower) record the task as FAILURE and run its errback. Its text is the
    stored, redacted error line, never the original exception's."""


@dataclass
class StepOutcome:
    done: bool
    retry_in: float | None = None
    failed: bool = False
    # The failure as stored (redacted), when failed.
    error: str = ""


def load_event(message: ProcessedMessage) -> AIResultEvent:
    return AIResultEvent.model_validate(message.payload)


def inbox_row(processing_id: str, *, lock: bool = False) -> ProcessedMessage:
    """The message's inbox row; MessagePurged when it no longer exists."""
    message = ProcessedMessage.objects.row(processing_id=processing_id, lock=lock)
    if message is None:
        raise MessagePurged(processing_id)
    return message


def active_message(processing_id: str, saga_run: int, *, lock: bool = False) -> ProcessedMessage:
    message = inbox_row(processing_id, lock=lock)
    tracing.note_message(message)
    if message.status != ProcessedMessage.Status.PROCESSING or message.saga_run != saga_run:
        raise SagaStopped(
            f"{processing_id} is {message.status} in run {message.saga_run}, not PROCESSING in run {saga_run}"
        )
    return message


def upsert_lead(event: AIResultEvent, business: Business) -> Lead:
    """The message's lead, created or brought up to date, and locked until the transaction ends."""
    customer = event.customer
    return Lead.objects.upsert(
        business=business,
        lead_id=event.lead_id,
        ids=CustomerIds(
            wa_id=customer.wa_id or "",
            user_id=customer.user_id or "",
            parent_user_id=customer.parent_user_id or "",
            username=customer.username or "",
            name=customer.name or "",
        ),
        received_at=event.message.received_at,
    )


def business_of(message: ProcessedMessage) -> Business:
    """The message's business, from this process's copy while it is current (leads.directory)."""
    return directory.business(message.business_id, getattr(message, "business_version", None))


def lead_of(message: ProcessedMessage, event: AIResultEvent, business: Business) -> Lead:
    """The message's lead: the one its row links (read with it), else by its ids."""
    return (
        message.lead_record  # type: ignore[return-value]  # set whenever lead_record_id is
        if message.lead_record_id is not None
        else Lead.objects.by_id(business, event.lead_id)
    )


def action_context(message: ProcessedMessage, step: SagaStep) -> ActionContext:
    event = load_event(message)
    business = business_of(message)
    return ActionContext(
        processing_id=message.processing_id,
        saga_run=step.saga_run,
        action=step.action,
        step_order=step.order,
        params=step.params,
        event=event,
        business=business,
        lead=lead_of(message, event, business),
    )


def secrets_of(context: ActionContext | None) -> tuple[str, ...]:
    """The secret values an action's errors must never carry: the access token and the business's webhook secret."""
    business_secret = context.business.sales_webhook_secret if context is not None else ""
    return (*configured_secrets(), *((business_secret,) if business_secret else ()))


def describe_failure(exc: BaseException, secrets: tuple[str, ...]) -> tuple[str, str]:
    """The error line and the traceback of exc as they are stored and logged: URLs cut down
    to their origin and known secrets replaced (config.redaction)."""
    error = redact(f"{type(exc).__name__}: {exc}", secrets)[:4000]
    return error, redact(traceback_module.format_exc(), secrets)


def reason_for(exc: BaseException, *, retryable: bool) -> str:
    """Why a stage failed for good: out of retries; refused on purpose (an action or a client
    said it can never work); or an error nobody raised on purpose, a bug, told apart so that
    it is not mistaken for a refusal."""
    if retryable:
        return DeadLetter.Reason.RETRIES_EXHAUSTED
    # A refusal that names its own reason (core.clients.cloud_api.CloudApiTemplateError: template_error).
    named = getattr(exc, "dead_letter_reason", None)
    if isinstance(named, str) and named in DeadLetter.Reason.values:
        return named
    if isinstance(exc, (ActionError, PermanentStageError)):
        return DeadLetter.Reason.NON_RETRYABLE
    return DeadLetter.Reason.UNEXPECTED_ERROR


def retry_delay(attempt: int, exc: BaseException, jitter: float) -> float:
    """The planned delay after this attempt, or longer if the service asked for it (Retry-After)."""
    delay = RETRY_DELAYS[max(attempt, 1) - 1] * jitter
    retry_after = getattr(exc, "retry_after", None)
    return max(delay, retry_after) if retry_after else delay


def fail(
    processing_id: str, saga_run: int, *, stage: str, reason: str, error: str, tb: str, failed_step: int | None = None
) -> bool:
    """Record why the run failed; the compensate task takes it from there.
    Returns False if another delivery already recorded a failure."""
    with transaction.atomic():
        try:
            message = active_message(processing_id, saga_run, lock=True)
        except SagaStopped:
            return False
        if message.failed_stage:
            return False
        if failed_step is not None:
            SagaStep.objects.filter(pk=failed_step).update(status=SagaStep.Status.FAILED, updated_at=timezone.now())
            counters.action(stage, "failed")
        message.fail(stage=stage, reason=reason, error=error, tb=tb)
    return True
