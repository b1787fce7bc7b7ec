"""Marking the customer's message read (the blue ticks).

Best effort: a read receipt is a courtesy, not part of the saga. Its first try is made inline
by the run's tail task (whatsapp.tasks.reply_and_finish), before the reply, through the same
breaker as the replies of that number and within the Cloud API client's own timeouts; whatever
happens to it, the task goes on to the reply: first_try never raises. Only a try that failed
retryably (or that the open breaker refused) is handed to a task of its own, whatsapp.mark_read,
on the Cloud API's queue with its wait as the countdown, so the reply never waits for it. That
task tries again a few times; then it is given up, logged and counted
(whatsapp_mark_read_total{outcome="given_up"}). Marking a message read twice is harmless, so a
redelivered tail task, or a retry task, needs no memory of the first.
"""

from __future__ import annotations

import logging
import random

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from config.celery import app
from core.breakers import CircuitOpen, breaker_for
from core.clients import cloud_api
from core.errors import is_retryable
from core.metrics import counters
from whatsapp.pipeline.lanes import NEW_MESSAGE, NORMAL_LANE
from whatsapp.send import pacer

log = logging.getLogger(__name__)

TASK = "whatsapp.mark_read"
QUEUE = "whatsapp"
# Seconds before the 2nd, 3rd and 4th try of a retryable failure; then it is given up.
RETRY_DELAYS: tuple[float, ...] = (1.0, 5.0, 15.0)
# An open breaker costs no try, but it is not waited out for ever.
MAX_REFUSALS = 10


def enabled() -> bool:
    return bool(getattr(settings, "WHATSAPP_MARK_READ", True))


def first_try(
    processing_id: str,
    saga_run: int,
    phone_number_id: str,
    message_id: str,
    *,
    lead_id: str = "",
    intent: str = "",
    lane: int = NORMAL_LANE,
) -> None:
    """Mark the message read now, once; never raises. Nothing when marking read is off, or the
    business has no number or the message no id. A try that should be made again later goes
    to the retry task (send_retry); any other failure is given up, logged and counted."""
    if not enabled() or not phone_number_id or not message_id:
        return
    try:
        wait = mark_read(phone_number_id, message_id, attempt=0)
    except SoftTimeLimitExceeded:
        raise  # the task's own limit, not the receipt's failure
    except Exception as exc:  # say, Postgres gone under the breaker: the reply comes first
        _give_up(message_id, f"the first try failed ({type(exc).__name__})")
        return
    if wait is not None:
        delay, refused = wait  # refused None: paced, which costs neither a try nor a refusal
        send_retry(
            processing_id,
            saga_run,
            phone_number_id,
            message_id,
            lead_id=lead_id,
            intent=intent,
            lane=lane,
            countdown=delay,
            attempt=1 if refused is False else 0,
            refusals=1 if refused else 0,
        )


def send_retry(
    processing_id: str,
    saga_run: int,
    phone_number_id: str,
    message_id: str,
    *,
    lead_id: str = "",
    intent: str = "",
    lane: int = NORMAL_LANE,
    countdown: float = 0,
    attempt: int = 1,
    refusals: int = 0,
) -> None:
    """Send the retry task (one publish), on the message's lane behind its replies
    (whatsapp.pipeline.lanes), so a read receipt never holds up a reply."""
    try:
        # The message's ids ride along so the task's log lines and trace carry them, read from nowhere.
        args = (processing_id, saga_run, phone_number_id, message_id, lead_id, intent)
        app.signature(TASK, args=args, kwargs={"attempt": attempt, "refusals": refusals}).apply_async(
            task_id=f"{processing_id}:{saga_run}:mark-read",
            queue=QUEUE,
            priority=lane + NEW_MESSAGE,
            countdown=countdown * random.uniform(0.9, 1.1),
        )
    except Exception as exc:  # the broker is gone: the run goes on all the same
        _give_up(message_id, f"the retry task could not be sent ({type(exc).__name__})")


def mark_read(
    phone_number_id: str, message_id: str, *, attempt: int, refusals: int = 0
) -> tuple[float, bool | None] | None:
    """Try once. None when done (marked, or given up); else (seconds to wait, whether the
    breaker refused it, which costs no try; None when the pacer made it wait, which costs
    nothing: a read receipt takes a slot of the number, after every reply waiting for one)."""
    try:
        pacer.reserve(phone_number_id, token=f"read:{message_id}", priority=pacer.READ_RECEIPT)
    except pacer.PaceWait as paced:
        return paced.countdown(), None
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
        pacer.throttled(phone_number_id, exc.code)
        if is_retryable(exc) and attempt < len(RETRY_DELAYS):
            return max(RETRY_DELAYS[attempt], getattr(exc, "retry_after", None) or 0.0), False
        _give_up(message_id, f"{type(exc).__name__}: {exc.title or exc}")
        return None
    counters.mark_read("sent")
    return None


def _give_up(message_id: str, why: str) -> None:
    log.warning("could not mark %s read; given up (best effort): %s", message_id, why)
    counters.mark_read("given_up")
