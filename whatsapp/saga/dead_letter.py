"""The failed run's DLQ entry, written once, and the inbox row marked FAILED with it."""

from __future__ import annotations

from django.db import transaction

from config.redaction import configured_secrets, redact
from core.metrics import counters
from dlq.models import DeadLetter
from leads.models import Lead
from whatsapp.models import OutboundMessage, ProcessedMessage, SagaStep
from whatsapp.pipeline import turns
from whatsapp.saga.run import inbox_row


def write_dead_letter(processing_id: str, saga_run: int) -> DeadLetter | None:
    """Write the run's DLQ entry and mark the inbox row FAILED, once; the customer's next
    message then has its turn (whatsapp.pipeline.turns): a dead letter holds up no other."""
    with transaction.atomic():
        message = inbox_row(processing_id, lock=True)
        if message.saga_run != saga_run:
            return None
        existing = DeadLetter.objects.open_for_run(processing_id, saga_run)
        if existing is not None:
            turns.pass_on(message.business_id, message.lead_id, processing_id, saga_run)
            return existing
        steps = list(SagaStep.objects.filter(message=message, saga_run=saga_run).order_by("order"))
        failed = next((s for s in steps if s.status == SagaStep.Status.FAILED), None)
        entry = DeadLetter.for_run(
            processing_id=processing_id,
            saga_run=saga_run,
            stage=message.failed_stage,
            reason=message.failure_reason,
            # Redacted when stored on the message; again here for rows an older version wrote.
            error=redact(message.last_error, configured_secrets()),
            traceback=redact(message.last_traceback, configured_secrets()),
            payload=message.payload,
            business_id=message.business_id,
            lead_id=message.lead_id,
            kafka_topic=message.kafka_topic,
            kafka_partition=message.kafka_partition,
            kafka_offset=message.kafka_offset,
            kafka_timestamp=message.kafka_timestamp,
            attempts=failed.attempts if failed else message.attempts,
            saga_state={
                "run": saga_run,
                "handler": message.handler,
                "steps": [s.as_state() for s in steps],
                **_reply_state(message, saga_run),
            },
            trace_id=message.trace_id,
        )
        message.mark_dead_lettered()
        turns.pass_on(message.business_id, message.lead_id, processing_id, saga_run)
        counters.dead_lettered(entry.stage, entry.reason)
        return entry


OPTED_OUT_WHY = "the customer opted out of automatic messages: no reply goes, a requeue sends none"


def _reply_state(message: ProcessedMessage, saga_run: int) -> dict:
    """Why no reply went, for the entry's page (dlq.admin_columns shows `reply`): only when the
    customer opted out, so an operator does not requeue to get an answer to them. One read
    (the lead) on the dead-letter path only; nothing for everyone else."""
    if message.lead_record_id is None or not message.reply_text:
        return {}
    if not Lead.objects.filter(pk=message.lead_record_id, opted_out_at__isnull=False).exists():
        return {}
    row = OutboundMessage.objects.filter(processing_id=message.processing_id, saga_run=saga_run).first()
    return {"reply": {"status": row.status if row else "not sent", "why": OPTED_OUT_WHY}}
