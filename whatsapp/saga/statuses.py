"""Applying a stored delivery status to the reply it names (the task half; the webhook
stored it: whatsapp.edge.statuses).

Applied by meaning, not arrival (whatsapp.models.OutboundMessage.apply_status). A `failed`
reply is dead-lettered at stage reply with reason delivery_failed, so an operator sees it
and can requeue it (which sends the reply again: whatsapp.recovery.requeue); a failure for
re-engagement (131047: the 24-hour window had closed) also asks a human to follow the lead up.
A failure for 131050 (the customer stopped marketing messages) is their choice, not a fault:
it is recorded on the lead (Lead.stop_marketing) and dead-letters nothing.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from config.redaction import configured_secrets, redact
from core.metrics import counters
from dlq.models import DeadLetter
from leads.models import Lead, LeadActivity, ReviewFlag
from whatsapp.models import DELIVERY_RANK, DeliveryStatus, OutboundMessage, ProcessedMessage, StatusApplied
from whatsapp.models.outbound import AGENT_REPLY_PREFIX
from whatsapp.saga.dead_letter import write_dead_letter
from whatsapp.send import agent

log = logging.getLogger(__name__)

# A status can outrun the send's own update that stores the wamid: look again after these
# delays (seconds) before counting it unknown, and no more.
UNKNOWN_RETRY_DELAYS: tuple[float, ...] = (2.0, 10.0)
REENGAGEMENT_CODE = 131047
MARKETING_STOPPED_CODE = 131050
REENGAGEMENT_REASON = "reengagement_needed"
FLAGGED_KIND = "flagged_for_review"


def apply(status_id: int, *, attempt: int = 0) -> str | None:
    """Apply one stored status to its reply; the outcome, or None when it should be tried
    again later (no reply has its wamid yet, and `attempt` has looks left).

    Idempotent: a status already settled is not applied again, and a failed one's changes
    (the reply, the row's outcome, a dead letter, a review flag) commit together."""
    row = DeliveryStatus.objects.filter(pk=status_id).first()
    if row is None or row.outcome != DeliveryStatus.Outcome.PENDING:
        return row.outcome if row is not None else None
    label = row.status if row.status in DELIVERY_RANK else "other"
    if row.status not in DELIVERY_RANK:
        row.settle(DeliveryStatus.Outcome.IGNORED)
        counters.delivery_status(label, DeliveryStatus.Outcome.IGNORED)
        log.info("delivery status %r for %s is not one we apply; kept", row.status[:32], row.wamid)
        return DeliveryStatus.Outcome.IGNORED
    # A failed status writes a dead letter with it, so all of it commits together; the others
    # are one UPDATE, which commits by itself (re-applying one after a crash changes nothing).
    with transaction.atomic() if row.status == OutboundMessage.Delivery.FAILED else contextlib.nullcontext():
        applied = OutboundMessage.apply_status(
            row.wamid,
            row.status,
            at=row.occurred_at or row.received_at,
            error_code=row.error_code,
            error_title=row.error_title,
        )
        if applied is None:
            if attempt < len(UNKNOWN_RETRY_DELAYS):
                return None
            outcome = DeliveryStatus.Outcome.UNKNOWN
            log.info("delivery status %s for %s: no message of ours has that id", row.status, row.wamid)
        elif not applied.applied:
            outcome = DeliveryStatus.Outcome.STALE
        else:
            outcome = DeliveryStatus.Outcome.APPLIED
            if row.status == OutboundMessage.Delivery.FAILED:
                _delivery_failed(row, applied)
        row.settle(outcome)
        counters.delivery_status(label, outcome)
    return outcome


def retry_delay(attempt: int) -> float:
    return UNKNOWN_RETRY_DELAYS[min(attempt, len(UNKNOWN_RETRY_DELAYS) - 1)]


def _delivery_failed(row: DeliveryStatus, reply: StatusApplied) -> None:
    """Meta could not deliver the reply: dead-letter its run at stage reply (the actions
    stand; a requeue sends the reply again) and, for 131047, ask a human to follow up."""
    error = f"DeliveryFailed: WhatsApp could not deliver the reply {row.wamid}"
    if row.error_code is not None:
        error += f" (code {row.error_code})"
    if row.error_title:
        error += f": {row.error_title}"
    details = _details(row.errors)
    if details and details != row.error_title:
        error += f" - {details}"
    if row.error_code == MARKETING_STOPPED_CODE:
        # The customer stopped marketing messages: their choice, not a fault to requeue. The
        # lead records it (no MARKETING template goes to them again); no dead letter.
        lead = Lead.objects.filter(pk=reply.lead_id).first()
        if lead is not None:
            lead.stop_marketing(source="delivery_status_131050", processing_id=reply.processing_id)
        log.info("reply for %s not delivered: the customer stopped marketing messages (131050)", reply.processing_id)
        return
    log.warning("reply for %s was not delivered (code %s): %s", reply.processing_id, row.error_code, row.error_title)
    _dead_letter(reply, error)
    if row.error_code == REENGAGEMENT_CODE:
        _flag_lead(row, reply)


def _details(errors: list[Any]) -> str:
    """Meta's explanation of the first error (error_data.details), without any secret."""
    first = next((e for e in errors if isinstance(e, dict)), {})
    raw = first.get("error_data")
    data: dict[str, Any] = raw if isinstance(raw, dict) else {}
    return redact(str(data.get("details") or ""), configured_secrets())[:1000]


def _dead_letter(reply: StatusApplied, error: str) -> None:
    """The reply's run as a dead letter at stage reply, once; the inbox row is locked first,
    as every stage locks it before the lead."""
    if reply.processing_id.startswith(AGENT_REPLY_PREFIX):
        # An agent's reply (the inbox app): no run behind it, its own dead letter.
        if agent.dead_letter(reply.outbound_id, reason=DeadLetter.Reason.DELIVERY_FAILED, error=error) is not None:
            counters.action(counters.REPLY, "failed")
        return
    message = ProcessedMessage.objects.select_for_update().filter(processing_id=reply.processing_id).first()
    if message is None or message.saga_run != reply.saga_run:
        # Purged, or sent through again since: this run is over, there is nothing to requeue.
        log.info(
            "reply for %s run %s failed after its run was over; not dead-lettered", reply.processing_id, reply.saga_run
        )
        return
    if message.status not in (ProcessedMessage.Status.PROCESSING, ProcessedMessage.Status.PROCESSED):
        return
    if message.failed_stage:
        return
    message.fail(stage=DeadLetter.Stage.REPLY, reason=DeadLetter.Reason.DELIVERY_FAILED, error=error, tb="")
    entry = write_dead_letter(reply.processing_id, reply.saga_run)
    if entry is not None:
        counters.action(counters.REPLY, "failed")
        log.warning(
            "dead-lettered %s run %s at reply (delivery_failed) as DLQ #%s",
            reply.processing_id,
            reply.saga_run,
            entry.pk,
        )


def _flag_lead(row: DeliveryStatus, reply: StatusApplied) -> None:
    """The customer must write first (or a template be sent): a human has to pick it up."""
    lead = Lead.objects.select_for_update().filter(pk=reply.lead_id).first()
    if lead is None:
        return
    detail = {"wamid": row.wamid, "error_code": row.error_code, "error_title": row.error_title}
    flag, created = ReviewFlag.objects.get_or_create(
        idempotency_key=f"delivery-status:{row.pk}",
        defaults={
            "processing_id": reply.processing_id,
            "saga_run": reply.saga_run,
            "business_id": reply.business_id,
            "lead": lead,
            "reason": REENGAGEMENT_REASON,
            "detail": detail,
        },
    )
    if not created:
        return
    Lead.objects.filter(pk=lead.pk).update(needs_review=True, updated_at=timezone.now())
    LeadActivity.objects.create(
        lead=lead,
        kind=FLAGGED_KIND,
        processing_id=reply.processing_id,
        detail={"reason": REENGAGEMENT_REASON, "flag_id": flag.pk, **detail},
    )
