"""Marking the customer's message read (the blue ticks) once its run has finished.

Best effort: a read receipt is a courtesy, not part of the saga. It is a task of its own,
sent after the finish step has committed (never a step of the chain, so it can neither fail
nor slow the run), on the Cloud API's queue and through the same breaker as the replies of
that number. A retryable failure is tried again a few times; then it is given up, logged and
counted (whatsapp_mark_read_total{outcome="given_up"}). Marking a message read twice is
harmless, so a redelivered task needs no memory of the first.
"""

from __future__ import annotations

import logging

from django.conf import settings

from config.celery import app
from core.breakers import CircuitOpen, breaker_for
from core.clients import cloud_api
from core.errors import is_retryable
from core.metrics import counters
from whatsapp.pipeline.lanes import NEW_MESSAGE, NORMAL_LANE

log = logging.getLogger(__name__)

TASK = "whatsapp.mark_read"
QUEUE = "whatsapp"
# Seconds before the 2nd, 3rd and 4th try of a retryable failure; then it is given up.
RETRY_DELAYS: tuple[float, ...] = (1.0, 5.0, 15.0)
# An open breaker costs no try, but it is not waited out for ever.
MAX_REFUSALS = 10


def enabled() -> bool:
    return bool(getattr(settings, "WHATSAPP_MARK_READ", True))


def send(
    processing_id: str,
    saga_run: int,
    phone_number_id: str,
    message_id: str,
    *,
    lead_id: str = "",
    intent: str = "",
    lane: int = NORMAL_LANE,
) -> None:
    """Send the task for a finished message (one publish; nothing when marking read is off, or
    the business has no number or the message no id). On the message's lane behind its
    replies (whatsapp.pipeline.lanes), so a read receipt never holds up a reply."""
    if not enabled() or not phone_number_id or not message_id:
        return
    try:
        # The message's ids ride along so the task's log lines and trace carry them, read from nowhere.
        args = (processing_id, saga_run, phone_number_id, message_id, lead_id, intent)
        app.signature(TASK, args=args).apply_async(
            task_id=f"{processing_id}:{saga_run}:mark-read", queue=QUEUE, priority=lane + NEW_MESSAGE
        )
    except Exception as exc:  # the broker is gone: the run is done all the same
        _give_up(message_id, f"the task could not be sent ({type(exc).__name__})")


def mark_read(phone_number_id: str, message_id: str, *, attempt: int, refusals: int = 0) -> tuple[float, bool] | None:
    """Try once. None when done (marked, or given up); else (seconds to wait, whether the
    breaker refused it, which costs no try)."""
    try:
        breaker_for(f"whatsapp:{phone_number_id}").call(
            cloud_api.mark_read, phone_number_id=phone_number_id, message_id=message_id
        )
    except CircuitOpen as refused:
        if refusals < MAX_REFUSALS:
            return refused.countdown(), True
        _give_up(message_id, "the breaker stayed open")
        return None
    except cloud_api.CloudApiError as exc:
        if is_retryable(exc) and attempt < len(RETRY_DELAYS):
            return max(RETRY_DELAYS[attempt], getattr(exc, "retry_after", None) or 0.0), False
        _give_up(message_id, f"{type(exc).__name__}: {exc.title or exc}")
        return None
    counters.mark_read("sent")
    return None


def _give_up(message_id: str, why: str) -> None:
    log.warning("could not mark %s read; given up (best effort): %s", message_id, why)
    counters.mark_read("given_up")
