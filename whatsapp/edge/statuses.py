"""Delivery statuses from Meta, as the webhook stores them: what became of the replies we sent.

Meta posts `sent`, `delivered`, `read` and `failed` for every message we send, in no
promised order, and redelivers a notification until it is answered 200. The webhook
stores each one inside its own short transaction (record_statuses: one INSERT, nothing
slow) and sends a task, by name, that applies it afterwards (whatsapp.saga.statuses).
This half imports no stage: only the models and the task's name.
"""

from __future__ import annotations

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

log = logging.getLogger(__name__)

APPLY_TASK = "whatsapp.apply_delivery_status"
# Pure database work, so the pipeline's queue (the "whatsapp" queue is for Cloud API calls).
APPLY_QUEUE = "pipeline"

_INSERT = """
    INSERT INTO whatsapp_deliverystatus
        (wamid, status, phone_number_id, recipient_id, recipient_user_id, occurred_at, error_code, error_title,
         errors, raw, received_at, outcome, applied_at)
    VALUES {rows}
    ON CONFLICT (wamid, status) DO NOTHING
    RETURNING id
"""
_ROW = "(%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, '', NULL)"


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
    # Meta's BSUID of the recipient (2026): kept beside the number, which it may withhold.
    recipient_user_id = item.get("recipient_user_id")
    return (
        wamid[:256],
        status[:32],
        (phone_number_id or "")[:32],
        recipient[:64] if isinstance(recipient, str) else "",
        recipient_user_id[:140] if isinstance(recipient_user_id, str) else "",
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
