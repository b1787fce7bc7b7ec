"""The saga of one message, kept in Postgres.

Celery delivers the tasks; this module decides what they do, reading and
writing only Postgres, so that a redelivered task, a re-driven message or a
compensation that runs twice always finds the true state and acts at most once.
"""
from __future__ import annotations

import logging
import sys
import traceback as traceback_module
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from config.redaction import configured_secrets, redact
from dlq.models import DeadLetter
from leads import directory, states
from leads.models import Business, Lead, LeadActivity
from whatsapp import actions as _actions  # noqa: F401  (registers the executors)
from whatsapp import handlers as _handlers  # noqa: F401  (registers the handlers)
from core import tracing
from whatsapp import metrics
from whatsapp.actions.base import ActionContext, RetryableActionError
from whatsapp.actions.registry import executors
from core.breakers import CircuitOpen
from whatsapp.contract import AIResultEvent
from whatsapp.handlers.base import Catalog, MessageContext
from whatsapp.handlers.registry import plan as plan_for
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
        super().__init__(f"{processing_id} has no inbox row (finished rows are purged after INBOX_RETENTION_DAYS); "
                         "nothing to do")


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
        raise SagaStopped(f"{processing_id} is {message.status} in run {message.saga_run}, not PROCESSING in run {saga_run}")
    return message


# --- 1. dedupe ----------------------------------------------------------------
def claim(processing_id: str, saga_run: int) -> bool:
    """RECEIVED -> PROCESSING, atomically; False for any other state."""
    row = ProcessedMessage.objects.claim(processing_id, saga_run, timezone.now())
    if row is not None:
        tracing.note_message(row)
    return row is not None


# --- 2. intent ----------------------------------------------------------------
def upsert_lead(event: AIResultEvent, business: Business) -> Lead:
    """The message's lead, created or brought up to date, and locked until the transaction ends."""
    return Lead.objects.upsert(business=business, lead_id=event.lead_id, wa_id=event.customer.wa_id,
                               customer_name=event.customer.name or "", received_at=event.message.received_at)


def business_of(message: ProcessedMessage) -> Business:
    """The message's business, from this process's copy while it is current (leads.directory)."""
    return directory.business(message.business_id, getattr(message, "business_version", None))


def plan(processing_id: str, saga_run: int) -> list[SagaStep]:
    """Resolve the tenant, upsert the lead, pick the handler and write the plan.
    A second call for the same run returns the plan already written."""
    with transaction.atomic():
        message = active_message(processing_id, saga_run, lock=True)
        if message.planned_run == saga_run:
            return list(message.saga_steps.filter(saga_run=saga_run).order_by("order"))
        event = load_event(message)
        with tracing.span("whatsapp.tenant", "resolve the business and tenant"):
            business = business_of(message)
            if event.tenant_id is not None and event.tenant_id != business.tenant_id:
                raise PermanentStageError(f"tenant_id does not match business {business.business_id}")
        lead = upsert_lead(event, business)
        context = MessageContext(event=event, business=business, lead=lead, catalog=Catalog(business))
        with tracing.span("whatsapp.handler", "choose the handler and plan the actions") as handler_span:
            decision = plan_for(context)
            handler_span.set_data("handler", decision.handler)
            handler_span.set_data("actions", [a.name for a in decision.actions])
        steps = SagaStep.objects.bulk_create([
            SagaStep(message=message, saga_run=saga_run, order=index, action=action.name, params=action.params)
            for index, action in enumerate(decision.actions, start=1)
        ])
        message.handler = decision.handler
        message.reply_text = decision.reply_text or ""
        message.planned_run = saga_run
        message.lead_record = lead
        message.save(update_fields=["handler", "reply_text", "planned_run", "lead_record", "updated_at"])
        activities = [LeadActivity(
            lead=lead, kind="message_received", processing_id=processing_id,
            detail={
                "intent": event.intent.value, "confidence": event.confidence, "handler": decision.handler,
                "actions": [a.name for a in decision.actions], "escalate": decision.should_escalate,
                "saga_run": saga_run, "note": decision.note,
            },
        )]
        if decision.lead_state:
            moved = states.move(lead, decision.lead_state, processing_id=processing_id, reason=decision.handler)
            if moved is not None:
                activities.append(moved)
        LeadActivity.objects.bulk_create(activities)
        metrics.planned(event.intent.value, event.confidence, event.ai.processing_ms if event.ai else None)
        log.info("intent: %s planned %s with handler %s", event.intent.value,
                 ", ".join(a.name for a in decision.actions) or "no action", decision.handler)
        return steps


class PermanentStageError(Exception):
    """A stage other than an action failed in a way no retry can fix."""


# --- 3. actions ---------------------------------------------------------------
@dataclass
class StepOutcome:
    done: bool
    retry_in: float | None = None
    failed: bool = False


def action_context(message: ProcessedMessage, step: SagaStep) -> ActionContext:
    event = load_event(message)
    business = business_of(message)
    lead = message.lead_record if message.lead_record_id is not None else \
        Lead.objects.get(business=business, lead_id=event.lead_id)
    return ActionContext(
        processing_id=message.processing_id, saga_run=step.saga_run, action=step.action, step_order=step.order,
        params=step.params, event=event, business=business, lead=lead,
    )


def step_message(step: SagaStep) -> ProcessedMessage:
    """The inbox row of a step, with its lead and its business's version, in one query."""
    message = ProcessedMessage.objects.row(pk=step.message_id)
    if message is None:
        raise MessagePurged(str(step.message_id))
    tracing.note_message(message)
    return message


class _AlreadyDone(Exception):
    """Another delivery of this step marked it SUCCEEDED first: roll this one's effect back."""


def secrets_of(context: ActionContext | None) -> tuple[str, ...]:
    """The secret values an action's errors must never carry: the access token and the business's webhook secret."""
    business_secret = context.business.sales_webhook_secret if context is not None else ""
    return (*configured_secrets(), *((business_secret,) if business_secret else ()))


def describe_failure(exc: BaseException, secrets: tuple[str, ...]) -> tuple[str, str]:
    """The error line and the traceback of exc as they are stored and logged: URLs cut down
    to their origin and known secrets replaced (config.redaction)."""
    error = redact(f"{type(exc).__name__}: {exc}", secrets)[:4000]
    return error, redact(traceback_module.format_exc(), secrets)


def run_step(processing_id: str, saga_run: int, order: int, *, jitter: float = 1.0) -> StepOutcome:
    """Execute one step. Returns done, a retry delay, or failed (then the
    message has been handed to compensation).

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
        log.info("action %s of %s waits %.1fs for breaker %s", step.action, processing_id, refused.remaining, refused.name)
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
        status=SagaStep.Status.SUCCEEDED, result=result, error="", updated_at=timezone.now())
    if updated:
        metrics.action(step.action, "succeeded")
    return bool(updated)


def _not_runnable(processing_id: str, saga_run: int, order: int) -> StepOutcome:
    """Why begin_attempt found nothing to run: the step is done, or the run has stopped."""
    message = active_message(processing_id, saga_run)  # SagaStopped / MessagePurged if the run is over
    status = SagaStep.objects.filter(message=message, saga_run=saga_run, order=order).values_list(
        "status", flat=True).first()
    if status == SagaStep.Status.SUCCEEDED:
        return StepOutcome(done=True)
    raise SagaStopped(f"step {order} of {processing_id} is {status or 'missing'}")


def _failed_attempt(step: SagaStep, executor, context: ActionContext | None, attempt: int, jitter: float,
                    processing_id: str, saga_run: int) -> StepOutcome:
    exc = sys.exc_info()[1]
    assert exc is not None
    retryable = executor.is_retryable(exc) or _is_transient(exc) or isinstance(exc, IntegrityError)
    error, tb = describe_failure(exc, secrets_of(context))
    SagaStep.objects.filter(pk=step.pk).update(error=error, traceback=tb, updated_at=timezone.now())
    if retryable and attempt <= len(RETRY_DELAYS):
        delay = retry_delay(attempt, exc, jitter)
        log.warning("action %s of %s failed (attempt %d), retrying in %.1fs: %s",
                    step.action, processing_id, attempt, delay, error)
        return StepOutcome(done=False, retry_in=delay)
    reason = "retries_exhausted" if retryable else "non_retryable"
    log.error("action %s of %s failed for good (%s, attempt %d): %s", step.action, processing_id, reason, attempt, error)
    fail(processing_id, saga_run, stage=step.action, reason=reason, error=error, tb=tb, failed_step=step.pk)
    return StepOutcome(done=False, failed=True)


def _give_back_attempt(step_pk: int) -> None:
    with transaction.atomic():
        step = SagaStep.objects.select_for_update().get(pk=step_pk)
        step.attempts -= 1
        step.attempt_log = [*step.attempt_log[:-1], {**step.attempt_log[-1], "refused_by_breaker": True}]
        step.save(update_fields=["attempts", "attempt_log", "updated_at"])


def retry_delay(attempt: int, exc: BaseException, jitter: float) -> float:
    """The planned delay after this attempt, or longer if the service asked for it (Retry-After)."""
    delay = RETRY_DELAYS[max(attempt, 1) - 1] * jitter
    retry_after = getattr(exc, "retry_after", None)
    return max(delay, retry_after) if retry_after else delay


def _is_transient(exc: BaseException) -> bool:
    from django.db import InterfaceError, OperationalError

    return isinstance(exc, (OperationalError, InterfaceError, CircuitOpen))


def fail(processing_id: str, saga_run: int, *, stage: str, reason: str, error: str, tb: str,
         failed_step: int | None = None) -> bool:
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
            metrics.action(stage, "failed")
        message.failed_stage = stage
        message.failure_reason = reason
        # Whoever passed them, they are stored only without URLs' secrets and known secret values.
        secrets = configured_secrets()
        message.last_error = redact(error, secrets)[:4000]
        message.last_traceback = redact(tb, secrets)
        message.save(update_fields=["failed_stage", "failure_reason", "last_error", "last_traceback", "updated_at"])
    return True


# --- compensation ---------------------------------------------------------------
def compensate_steps(processing_id: str, saga_run: int) -> bool:
    """Undo the run's succeeded steps in reverse order. Returns True when no
    step is left to try again (each is COMPENSATED or COMPENSATION_FAILED)."""
    message = inbox_row(processing_id)
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
                    metrics.compensation(step.action, "compensated")
            else:
                # It calls an outside service: no transaction open meanwhile (see run_step).
                context = action_context(message, step)
                with tracing.span("whatsapp.compensate", step.action, action=step.action):
                    executor.compensate(context, step.result or {})
                if SagaStep.objects.filter(pk=step.pk, status=SagaStep.Status.SUCCEEDED).update(
                        status=SagaStep.Status.COMPENSATED, compensation_attempts=F("compensation_attempts") + 1,
                        updated_at=timezone.now()):
                    metrics.compensation(step.action, "compensated")
        except Exception as exc:
            error, _ = describe_failure(exc, secrets_of(context))
            with transaction.atomic():
                locked = SagaStep.objects.select_for_update().get(pk=step.pk)
                locked.compensation_attempts += 1
                locked.compensation_error = error
                retryable = executor.is_retryable(exc) or _is_transient(exc)
                if retryable and locked.compensation_attempts <= len(RETRY_DELAYS):
                    pending_retry = True
                else:
                    locked.status = SagaStep.Status.COMPENSATION_FAILED
                    metrics.compensation(step.action, "failed")
                locked.save(update_fields=["status", "compensation_attempts", "compensation_error", "updated_at"])
            log.error("compensating %s of %s failed: %s", step.action, processing_id, error)
            if pending_retry:
                # Stop here: later steps must not be undone before this one is.
                return False
    return True


def dead_letter(processing_id: str, saga_run: int) -> DeadLetter | None:
    """Write the run's DLQ entry and mark the inbox row FAILED, once."""
    with transaction.atomic():
        message = inbox_row(processing_id, lock=True)
        if message.saga_run != saga_run:
            return None
        existing = (DeadLetter.objects.filter(processing_id=processing_id, saga_run=saga_run, status=DeadLetter.Status.OPEN)
                    .exclude(stage="ingest").first())
        if existing is not None:
            return existing
        steps = list(SagaStep.objects.filter(message=message, saga_run=saga_run).order_by("order"))
        failed = next((s for s in steps if s.status == SagaStep.Status.FAILED), None)
        previous = (
            DeadLetter.objects.filter(processing_id=processing_id, status=DeadLetter.Status.REQUEUED)
            .order_by("-created_at").first()
        )
        entry = DeadLetter.objects.create(
            payload=message.payload,
            processing_id=processing_id,
            business_id=message.business_id,
            lead_id=message.lead_id,
            kafka_topic=message.kafka_topic,
            kafka_partition=message.kafka_partition,
            kafka_offset=message.kafka_offset,
            kafka_timestamp=message.kafka_timestamp,
            stage=message.failed_stage or "pipeline",
            reason=message.failure_reason or "non_retryable",
            error_class=(message.last_error.split(":", 1)[0] if message.last_error else ""),
            # Redacted when stored on the message; again here for rows an older version wrote.
            error_message=redact(message.last_error, configured_secrets()),
            traceback=redact(message.last_traceback, configured_secrets()),
            attempts=failed.attempts if failed else message.attempts,
            saga_run=saga_run,
            saga_state={"run": saga_run, "handler": message.handler, "steps": [s.as_state() for s in steps]},
            trace_id=message.trace_id,
            previous=previous,
        )
        message.status = ProcessedMessage.Status.FAILED
        message.finished_at = timezone.now()
        message.save(update_fields=["status", "finished_at", "updated_at"])
        metrics.dead_lettered(entry.stage, entry.reason)
        return entry


# --- 4. reply -------------------------------------------------------------------
def reply(processing_id: str, saga_run: int, *, jitter: float = 1.0) -> StepOutcome:
    """Send the handler's reply. It is the saga's last step because it cannot
    be undone; for the same reason its final failure compensates nothing (the
    actions stand): the message is dead-lettered at stage "reply", and
    requeueing that entry sends only the reply again."""
    from whatsapp.models import OutboundMessage
    from whatsapp.outbound import send_reply

    message = active_message(processing_id, saga_run)
    if not message.reply_text or message.failed_stage:
        return StepOutcome(done=True)
    event = load_event(message)
    business = business_of(message)
    lead = message.lead_record if message.lead_record_id is not None else \
        Lead.objects.get(business=business, lead_id=event.lead_id)
    try:
        with tracing.span("whatsapp.reply", "reply to the customer", action=metrics.REPLY):
            send_reply(processing_id=processing_id, saga_run=saga_run, business=business, lead=lead,
                       text=message.reply_text, context_message_id=event.message_id)
        return StepOutcome(done=True)
    except CircuitOpen as refused:
        return StepOutcome(done=False, retry_in=refused.countdown())
    except Exception as exc:
        row = OutboundMessage.objects.filter(processing_id=processing_id, saga_run=saga_run).first()
        attempt = row.attempts if row else 1
        retryable = isinstance(exc, RetryableActionError) or _is_transient(exc)
        error, tb = describe_failure(exc, configured_secrets())
        if retryable and attempt <= len(RETRY_DELAYS):
            delay = retry_delay(attempt, exc, jitter)
            log.warning("reply for %s failed (attempt %d), retrying in %.1fs: %s", processing_id, attempt, delay, error)
            return StepOutcome(done=False, retry_in=delay)
        reason = "retries_exhausted" if retryable else "non_retryable"
        log.error("reply for %s failed for good (%s): %s", processing_id, reason, error)
        if fail(processing_id, saga_run, stage="reply", reason=reason, error=error, tb=tb):
            metrics.action(metrics.REPLY, "failed")
            dead_letter(processing_id, saga_run)
        return StepOutcome(done=False, failed=True)


# --- 5. finish ------------------------------------------------------------------
def finish(processing_id: str, saga_run: int) -> bool:
    """Mark the message processed, with its lead's activity, in one statement. False
    when the run has moved on or failed; SagaStopped when a step is not done;
    MessagePurged when its inbox row is gone."""
    done = ProcessedMessage.objects.finish_run(processing_id, saga_run, timezone.now())
    if done is None:
        message = active_message(processing_id, saga_run)  # SagaStopped / MessagePurged: the run is over
        if message.failed_stage:
            return False
        raise SagaStopped(f"{processing_id} reached finish with unfinished steps")
    tracing.note_message(ProcessedMessage(processing_id=processing_id, lead_id=done["lead_id"], intent=done["intent"]))
    since = done["kafka_timestamp"] or done["received_at"]
    metrics.processed(done["intent"], since)
    elapsed = (done["finished_at"] - since).total_seconds() if since else None
    log.info("finish: processed (%s)", done["intent"],
             extra={"duration_ms": round(elapsed * 1000, 1) if elapsed is not None else None})
    return True
