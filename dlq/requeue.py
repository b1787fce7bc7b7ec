"""Requeueing a dead letter: the one way operators, the admin and the
commands send a message through the pipeline again."""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from dlq.models import DeadLetter


class RequeueRefused(Exception):
    """The entry cannot be requeued as it stands; the message says why."""


def requeue(entry_id: int, *, by: str) -> DeadLetter:
    """Re-run a dead-lettered message from the start.

    A pipeline failure starts a new saga run of the same inbox row: the run
    number is part of every executor's idempotency key, so what the failed
    run compensated is done again once, and nothing is done twice within a
    run. An ingest failure (say, an unknown business since created) is
    validated again from the raw record and taken in like a new one; one whose
    processing_id belongs to another business's message (processing_id_conflict)
    is refused as long as that message holds it."""
    from whatsapp.contract import ContractError, parse_event
    from whatsapp.intake import PROCESSING_ID_CONFLICT, is_outage, take_in
    from whatsapp.kafka import Record, headers_from_json
    from whatsapp.models import ProcessedMessage
    from whatsapp.pipeline import hand_off

    traces: dict = {}
    with transaction.atomic():
        entry = DeadLetter.objects.select_for_update().get(pk=entry_id)
        if entry.status != DeadLetter.Status.OPEN:
            raise RequeueRefused(f"dead letter #{entry.pk} is {entry.status}, only OPEN entries can be requeued")
        if entry.stage == DeadLetter.Stage.INGEST:
            raw = bytes(entry.raw_value) if entry.raw_value is not None else None
            try:
                parse_event(raw)
            except ContractError as exc:
                raise RequeueRefused(f"the record is still invalid: {exc}") from None
            headers = headers_from_json(entry.kafka_headers or [])
            if entry.trace_id and not any((k or "").lower() in ("sentry-trace", "traceparent") for k, _ in headers):
                # Carry on the trace the dead letter was written in.
                headers.append(("sentry-trace", f"{entry.trace_id}-{uuid.uuid4().hex[:16]}".encode()))
            record = Record(
                topic=entry.kafka_topic, partition=entry.kafka_partition if entry.kafka_partition is not None else -1,
                offset=entry.kafka_offset if entry.kafka_offset is not None else -entry.pk,
                value=raw, key=bytes(entry.kafka_key) if entry.kafka_key is not None else None,
                timestamp=entry.kafka_timestamp, timestamp_ms=entry.kafka_timestamp_ms, headers=headers,
            )
            try:
                result = take_in([record], source="requeue")
            except Exception as exc:
                if is_outage(exc):
                    raise
                # Still unprocessable (say, what broke it is not fixed yet); the entry stays OPEN.
                raise RequeueRefused(f"the record still cannot be taken in ({type(exc).__name__})") from None
            if result.dead_lettered.get(PROCESSING_ID_CONFLICT):
                raise RequeueRefused(f"the record is still refused: {PROCESSING_ID_CONFLICT} (its processing_id "
                                     f"{entry.processing_id} belongs to another business's message)")
            if result.dead_lettered:
                raise RequeueRefused(f"the record is still refused: {', '.join(result.dead_lettered)}")
            runs, traces = result.new, result.traces
            saga_run = runs[0][1] if runs else None
        elif entry.stage == "reply":
            # The actions stand; only the reply is sent again, in the same run.
            message = _inbox_row(entry.processing_id)
            if message.status != ProcessedMessage.Status.FAILED or message.saga_run != entry.saga_run:
                raise RequeueRefused(f"{message.processing_id} has moved on since this entry (now {message.status}, "
                                     f"run {message.saga_run})")
            message.status = ProcessedMessage.Status.PROCESSING
            message.failed_stage = message.failure_reason = message.last_error = message.last_traceback = ""
            message.finished_at = None
            message.save()
            saga_run = message.saga_run
            runs = []

            def send_again(pid: str = message.processing_id, run: int = saga_run,
                           trace_id: str = message.trace_id) -> None:
                from whatsapp.tasks import reply_signature
                from core.tracing import message_trace

                with message_trace(trace_id, name="whatsapp.requeue", processing_id=pid):
                    reply_signature(pid, run).apply_async()

            transaction.on_commit(send_again)
        else:
            message = _inbox_row(entry.processing_id)
            if message.status not in {ProcessedMessage.Status.FAILED, ProcessedMessage.Status.PROCESSED}:
                raise RequeueRefused(f"{message.processing_id} is {message.status}; wait until its run has ended")
            message.saga_run += 1
            message.status = ProcessedMessage.Status.RECEIVED
            message.failed_stage = message.failure_reason = message.last_error = message.last_traceback = ""
            message.started_at = message.finished_at = None
            message.save()
            runs = [(message.processing_id, message.saga_run)]
            saga_run = message.saga_run
        now: datetime = timezone.now()
        entry.status = DeadLetter.Status.REQUEUED
        entry.requeue_count += 1
        entry.requeue_history = [*entry.requeue_history, {"by": by, "at": now.isoformat(), "saga_run": saga_run}]
        entry.save(update_fields=["status", "requeue_count", "requeue_history", "updated_at"])
        # Enqueue only once the new run is committed, so a worker finds it.
        if runs:
            transaction.on_commit(lambda: hand_off(runs, traces))
    return entry


def _inbox_row(processing_id: str):
    from whatsapp.models import ProcessedMessage

    try:
        return ProcessedMessage.objects.select_for_update().get(processing_id=processing_id)
    except ProcessedMessage.DoesNotExist:
        raise RequeueRefused(f"{processing_id} has no inbox row any more (finished rows are purged after "
                             "INBOX_RETENTION_DAYS), so its saga cannot be run again") from None


@dataclass
class RequeueReport:
    """What a bulk requeue did: the entries sent again, and why the others were not."""

    requeued: list[DeadLetter] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    # Not tried, because the time given ran out first (oldest first, as they were given).
    left: list[int] = field(default_factory=list)


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
    whose request must end before the web worker's timeout)."""
    from django.conf import settings

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
