"""Stage 4: the reply to the customer, sent by the run's tail task (whatsapp.tasks.reply_and_finish),
after the read receipt's first try and before finish. It is the saga's last step because it cannot be
undone; for the same reason its final failure compensates nothing (the actions stand):
the message is dead-lettered at stage "reply", and requeueing that entry sends only the
reply again (whatsapp.recovery.requeue). Outside the 24-hour window the reply goes as the
business's template for its kind (whatsapp.send.template); Meta refusing the template
dead-letters it as template_error, and a requeue once the template is fixed sends it."""

from __future__ import annotations

import logging

from config.redaction import configured_secrets
from core import tracing
from core.breakers import CircuitOpen
from core.errors import is_retryable
from core.metrics import counters
from dlq.models import DeadLetter
from whatsapp.handlers import opt_out
from whatsapp.models import OutboundMessage, ProcessedMessage
from whatsapp.saga.dead_letter import write_dead_letter
from whatsapp.saga.run import (
    RETRY_DELAYS,
    StepOutcome,
    active_message,
    business_of,
    describe_failure,
    fail,
    lead_of,
    load_event,
    reason_for,
    retry_delay,
)
from whatsapp.send import reply as outbound
from whatsapp.send.pacer import PaceWait

log = logging.getLogger(__name__)


def send_reply(
    processing_id: str, saga_run: int, *, jitter: float = 1.0, message: ProcessedMessage | None = None
) -> StepOutcome:
    """Send the handler's reply: done, a retry delay, or failed (then dead-lettered). `message`
    is the run's inbox row when the caller has just read it (the tail task), saving a read;
    the send itself is keyed by the run (whatsapp.send.reply), so a redelivered task never
    sends it twice."""
    if message is None:
        message = active_message(processing_id, saga_run)
    if not message.reply_text or message.failed_stage:
        return StepOutcome(done=True)
    event = load_event(message)
    business = business_of(message)
    lead = lead_of(message, event, business)
    try:
        with tracing.span("whatsapp.reply", "reply to the customer", action=counters.REPLY):
            outbound.send_reply(
                processing_id=processing_id,
                saga_run=saga_run,
                business=business,
                lead=lead,
                text=message.reply_text,
                context_message_id=event.message_id,
                kind=message.reply_kind,
                fields=message.reply_fields,
                # The STOP/START confirmation is the one reply an opted-out customer gets.
                confirms_opt_out=message.handler == opt_out.HANDLER,
            )
        return StepOutcome(done=True)
    except (CircuitOpen, PaceWait) as refused:
        # Refused by an open breaker, or paced (whatsapp.send.pacer): nothing was sent or
        # counted, so the wait costs no attempt and is no failure.
        return StepOutcome(done=False, retry_in=refused.countdown())
    except Exception as exc:
        row = OutboundMessage.objects.filter(processing_id=processing_id, saga_run=saga_run).first()
        attempt = row.attempts if row else 1
        retryable = is_retryable(exc)
        error, tb = describe_failure(exc, configured_secrets())
        if retryable and attempt <= len(RETRY_DELAYS):
            delay = retry_delay(attempt, exc, jitter)
            log.warning("reply for %s failed (attempt %d), retrying in %.1fs: %s", processing_id, attempt, delay, error)
            return StepOutcome(done=False, retry_in=delay)
        reason = reason_for(exc, retryable=retryable)
        log.error("reply for %s failed for good (%s): %s", processing_id, reason, error)
        if fail(processing_id, saga_run, stage=DeadLetter.Stage.REPLY, reason=reason, error=error, tb=tb):
            counters.action(counters.REPLY, "failed")
            write_dead_letter(processing_id, saga_run)
        return StepOutcome(done=False, failed=True, error=error)
