"""Requeueing a dead letter: the one way operators, the admin and the
commands send a message through the pipeline again.

The DLQ does not know how: the app that wrote the entry does. settings.DLQ_REQUEUE_HANDLER
names its handler (a dotted path, loaded with import_string, as Django's sessions load
their backend), so this app imports none of the apps that use it."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from core.dotted import import_path
from dlq.models import DeadLetter

# Called with the entry, locked, inside the transaction that marks it REQUEUED: sends the
# message through again (on commit), returns the saga run it starts (or None), or raises
# RequeueRefused saying why it cannot, or RequeueUnavailable when what it sends to is down.
RequeueHandler = Callable[[DeadLetter], "int | None"]


class RequeueRefused(Exception):
    """The entry cannot be requeued as it stands; the message says why."""


class RequeueUnavailable(Exception):
    """What requeueing sends to (say, the Celery broker) cannot be reached: an outage, not
    a property of the entry. Nothing was changed; a bulk requeue stops here, since every
    entry after this one would meet the same outage, and leaves them all as they were."""


def requeue_handler() -> RequeueHandler:
    """The handler settings.DLQ_REQUEUE_HANDLER names; ImproperlyConfigured when it names none."""
    return _load(getattr(settings, "DLQ_REQUEUE_HANDLER", None))


@functools.cache
def _load(path: str | None) -> RequeueHandler:
    if not path:
        raise ImproperlyConfigured(
            "DLQ_REQUEUE_HANDLER is not set: name the function that sends a dead letter's "
            "message through again (say, whatsapp.recovery.requeue.requeue_dead_letter)"
        )
    try:
        handler = import_path(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"DLQ_REQUEUE_HANDLER {path!r} cannot be imported: {exc}") from None
    if not callable(handler):
        raise ImproperlyConfigured(f"DLQ_REQUEUE_HANDLER {path!r} is not a function")
    return handler


def requeue(entry_id: int, *, by: str) -> DeadLetter:
    """Send a dead letter's message through again, through the configured handler,
    and mark the entry REQUEUED in the same transaction."""
    handler = requeue_handler()
    with transaction.atomic():
        entry = DeadLetter.objects.select_for_update().get(pk=entry_id)
        if entry.status != DeadLetter.Status.OPEN:
            raise RequeueRefused(f"dead letter #{entry.pk} is {entry.status}, only OPEN entries can be requeued")
        saga_run = handler(entry)
        entry.mark_requeued(by=by, saga_run=saga_run)
    return entry


@dataclass
class RequeueReport:
    """What a bulk requeue did: the entries sent again, and why the others were not."""

    requeued: list[DeadLetter] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    # Not tried, because the time given ran out first or an outage stopped the run (oldest
    # first, as they were given); still OPEN, as they were.
    left: list[int] = field(default_factory=list)
    # Why the run stopped early on an outage (RequeueUnavailable's message), else None.
    unavailable: str | None = None


def requeue_many(
    entry_ids: Iterable[int],
    *,
    by: str,
    rate: float | None = None,
    on_each: Callable[[int, DeadLetter | None, str | None], None] | None = None,
    seconds: float | None = None,
) -> RequeueReport:
    """Requeue each entry through requeue(), at most `rate` a second
    (default settings.DLQ_REQUEUE_RATE_PER_SECOND).

    The pacing is what keeps a bulk requeue of thousands from arriving in the
    pipeline all at once, ahead of live traffic. One refused entry does not stop
    the others; `on_each(entry_id, entry, refusal)` is told about each as it goes,
    so a command can print progress. With `seconds`, no requeue starts after that
    many seconds: the entries not reached are in the report's `left` (the admin,
    whose request must end before the web worker's timeout). An outage
    (RequeueUnavailable) stops the run: that entry and the rest are `left`, untouched,
    and `unavailable` says why."""
    rate = rate or settings.DLQ_REQUEUE_RATE_PER_SECOND
    interval = 1.0 / rate
    report = RequeueReport()
    next_start = time.monotonic()
    deadline = next_start + seconds if seconds is not None else None
    entry_ids = list(entry_ids)
    for index, entry_id in enumerate(entry_ids):
        if deadline is not None and max(next_start, time.monotonic()) >= deadline:
            report.left = entry_ids[index:]
            break
        # Starts at least `interval` apart: a slow requeue is not made up for by a burst after it.
        delay = next_start - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        next_start = time.monotonic() + interval
        entry: DeadLetter | None = None
        refusal: str | None = None
        try:
            entry = requeue(entry_id, by=by)
        except RequeueUnavailable as exc:
            report.left = entry_ids[index:]
            report.unavailable = str(exc)
            break
        except RequeueRefused as exc:
            refusal = str(exc)
        except DeadLetter.DoesNotExist:
            refusal = f"dead letter #{entry_id} does not exist"
        if entry is not None:
            report.requeued.append(entry)
        else:
            report.refused.append((entry_id, refusal or ""))
        if on_each is not None:
            on_each(entry_id, entry, refusal)
    return report
