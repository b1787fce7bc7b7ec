"""The read receipt's first try, made by the run's tail task (whatsapp.tasks.reply_and_finish)
before the reply. Not a stage: it can neither fail nor hold up the run
(whatsapp.send.read_receipts), and the ids it needs come from the inbox row the tail task has
read already, so it costs no query of its own."""

from __future__ import annotations

import logging

from celery.exceptions import SoftTimeLimitExceeded

from core import tracing
from core.metrics import counters
from whatsapp.models import ProcessedMessage
from whatsapp.pipeline.lanes import NORMAL_LANE
from whatsapp.saga.run import business_of
from whatsapp.send import read_receipts

log = logging.getLogger(__name__)


def mark_read(message: ProcessedMessage, *, lane: int = NORMAL_LANE) -> None:
    """Mark the run's message read, best effort: never raises."""
    if not read_receipts.enabled():
        return
    try:
        phone_number_id = business_of(message).phone_number_id or ""
        message_id = (message.payload or {}).get("message_id") or ""
        with tracing.span("whatsapp.mark_read", "mark the message read"):
            read_receipts.first_try(
                message.processing_id,
                message.saga_run,
                phone_number_id,
                message_id,
                lead_id=message.lead_id,
                intent=message.intent,
                lane=lane,
            )
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:  # a courtesy: the reply and finish go on
        log.warning("could not mark %s read; given up (best effort): %s", message.processing_id, type(exc).__name__)
        counters.mark_read("given_up")
