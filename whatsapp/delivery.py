"""Delivery statuses back from Meta: what became of the replies we sent.

Meta posts `sent`, `delivered`, `read` and `failed` for every message we send, in no
promised order, and redelivers a notification until it is answered 200. The webhook
stores each one in its own short transaction (record_statuses: one INSERT, nothing slow)
and a task applies it afterwards (apply): to the reply by wamid, in order of meaning
(whatsapp.models.OutboundMessage.apply_status). A `failed` reply is dead-lettered at
stage reply with reason delivery_failed, so an operator sees it and can requeue it (which
sends the reply again: whatsapp.requeue); a failure for re-engagement (131047: the
24-hour window had closed) also asks a human to follow the lead up.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from config.celery import app
from config.redaction import configured_secrets, redact
from core.metrics import counters
from dlq.models import DeadLetter
from leads.models import Lead, LeadActivity, ReviewFlag
from whatsapp.models import DELIVERY_RANK, DeliveryStatus, OutboundMessage, ProcessedMessage, StatusApplied
from whatsapp.saga.dead_letter import write_dead_letter

log = logging.getLogger(__name__)

APPLY_TASK = "whatsapp.apply_delivery_status"
# Pure database work, so the pipeline's queue (the "whatsapp" queue is for Cloud API calls).
APPLY_QUEUE = "pipeline"
# A status can outrun the send's own update that stores the wamid: look again after these
# delays (seconds) before counting it unknown, and no more.
UNKNOWN_RETRY_DELAYS: tuple[float, ...] = (2.0, 10.0)
REENGAGEMENT_CODE = 131047
REENGAGEMENT_REASON = "reengagement_needed"
FLAGGED_KIND = "flagged_for_review"

_INSERT = """
    INSERT INTO whatsapp_deliverystatus
        (wamid, status, phone_number_id, recipient_id, occurred_at, error_code, error_title, errors, raw,
         received_at, outcome, applied_at)
    VALUES {rows}
    ON CONFLICT (wamid, status) DO NOTHING
    RETURNING id
"""
_ROW = "(%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, '', NULL)"


def record_statuses(statuses: list[dict[str, Any]], *, phone_number_id: str) -> int:
    """Store Meta's `value.statuses[]` objects as they came, one row each, and return how many
    were new; each new one is applied by a task sent once the caller's transaction commits.

    Called inside the webhook's one short transaction, so it does nothing slow: one INSERT
    (a redelivered status is absorbed by the unique (wamid, status)). An object without an
    id or a status is not a status: it is logged and counted (outcome invalid), never
    raised, since refusing the delivery would only make Meta send it again for ever; the
    webhook keeps the raw body anyway."""
    rows: list[tuple[Any, ...]] = []
    now = timezone.now()
    for item in statuses:
        parsed = _parse(item, phone_number_id, now)
        if parsed is None:
            counters.delivery_status("other", "invalid")
            log.warning("delivery status without a message id or status ignored (phone number %s)", phone_number_id)
            continue
        rows.append(parsed)
    if not rows:
        return 0
    # The same status twice in one delivery would make ON CONFLICT touch a row twice.
    unique = list({(row[0], row[1]): row for row in rows}.values())
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT.format(rows=", ".join([_ROW] * len(unique))),
            [value for row in unique for value in row],
        )
        ids = [row[0] for row in cursor.fetchall()]
    if ids:
        transaction.on_commit(lambda: send_apply(ids), robust=True)
    return len(ids)


def send_apply(ids: Iterable[int]) -> None:
    """Send the task that applies each stored status (by id: tasks carry ids, never payloads)."""
    with app.producer_or_acquire() as producer:
        for status_id in ids:
            app.signature(APPLY_TASK, args=(status_id,)).apply_async(
                task_id=f"delivery-status:{status_id}", queue=APPLY_QUEUE, producer=producer
            )


def _parse(item: Any, phone_number_id: str, now: datetime) -> tuple[Any, ...] | None:
    if not isinstance(item, dict):
        return None
    wamid, status = item.get("id"), item.get("status")
    if not isinstance(wamid, str) or not wamid or not isinstance(status, str) or not status:
        return None
    raw_errors = item.get("errors")
    errors: list[Any] = raw_errors if isinstance(raw_errors, list) else []
    first = next((e for e in errors if isinstance(e, dict)), {})
    code = first.get("code") if isinstance(first.get("code"), int) else None
    title = redact(str(first.get("title") or first.get("message") or ""), configured_secrets())[:300]
    recipient = item.get("recipient_id")
    return (
        wamid[:256],
        status[:32],
        (phone_number_id or "")[:32],
        recipient[:64] if isinstance(recipient, str) else "",
        _meta_time(item.get("timestamp")),
        code,
        title,
        json.dumps(errors),
        json.dumps(item),
        now,
    )


def _meta_time(value: Any) -> datetime | None:
    """Meta's `timestamp`: Unix seconds, as a string."""
    try:
        return datetime.fromtimestamp(int(str(value)), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


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
