"""The sweeper: the inbox, not the broker, is the source of truth.

A message waiting for its turn (WAITING, behind an earlier message of its customer's:
whatsapp.pipeline.turns) is the holder's to start; the sweeper starts it only when no live run
holds the turn (the holder's worker died between its finish and handing the turn on).

A message whose Celery tasks were lost (Redis restarted empty, a worker
SIGKILLed and its message never redelivered) sits in RECEIVED or PROCESSING.
The sweeper finds such rows and starts them again from what Postgres says
they have done; every step is idempotent, so re-driving one that was merely
slow costs a no-op. Rows are claimed with FOR UPDATE SKIP LOCKED, so several
sweepers never re-drive the same row at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.progress import ProgressFactory, quiet
from core.tracing import message_trace
from whatsapp.edge import statuses as delivery
from whatsapp.models import DeliveryStatus, ProcessedMessage, SagaStep
from whatsapp.pipeline import turns
from whatsapp.pipeline.chains import resume_signature, start_compensation
from whatsapp.pipeline.hand_off import hand_off
from whatsapp.recovery.raw_retention import purge_raw

log = logging.getLogger(__name__)

# Finished rows deleted per statement when purging: short transactions, and progress to show.
PURGE_CHUNK = 1000


@dataclass
class SweepResult:
    stuck: int = 0
    redriven: dict[str, int] = field(default_factory=dict)
    purged: int = 0
    statuses: int = 0

    def as_dict(self) -> dict:
        return {"stuck": self.stuck, "redriven": self.redriven, "purged": self.purged, "statuses": self.statuses}


def restart(messages: list[ProcessedMessage]) -> None:
    """Hand messages never started (RECEIVED) to Celery again, all in one hand-off (one
    Redis round trip, as ingest sends a batch): after Redis restarted empty that is every
    message in flight, and a round trip and a lookup each made the sweep outlast its caller."""
    if messages:
        hand_off(
            [(m.processing_id, m.saga_run) for m in messages],
            known={m.processing_id: (m.business_id, m.trace_id) for m in messages},
        )


def redrive(message: ProcessedMessage) -> str:
    """Carry on a started message (PROCESSING) from the point its saga rows show: its
    compensation if a failure is recorded, else the actions not yet succeeded and then the
    run's tail (chains.resume_signature), which sends no reply already sent."""
    # The re-driven tasks join the message's own trace, not the sweeper's.
    with message_trace(message.trace_id, name="whatsapp.redrive", processing_id=message.processing_id):
        if message.failed_stage:
            start_compensation(message.processing_id, message.saga_run)
            return "compensating"
        resume_signature(
            message.processing_id, message.saga_run, planned=message.planned_run == message.saga_run
        ).apply_async()
    return "resumed"


def redrive_statuses(before: datetime, limit: int) -> int:
    """Send again the apply task of delivery statuses stored before `before` and never applied
    (the broker was gone when the webhook's transaction committed). Applying is idempotent."""
    ids = list(
        DeliveryStatus.objects.filter(outcome=DeliveryStatus.Outcome.PENDING, received_at__lt=before)
        .order_by("received_at")
        .values_list("pk", flat=True)[:limit]
    )
    if ids:
        delivery.send_apply(ids)
        log.warning("sweeper: %d delivery statuses never applied; sent again", len(ids))
    return len(ids)


def sweep(
    *,
    stuck_after: float | None = None,
    purge: bool = True,
    limit: int = 1000,
    now: datetime | None = None,
    progress: ProgressFactory = quiet,
) -> SweepResult:
    now = now or timezone.now()
    stuck_after = settings.SWEEP_STUCK_AFTER_SECONDS if stuck_after is None else stuck_after
    result = SweepResult()
    with transaction.atomic():
        rows = list(
            ProcessedMessage.objects.select_for_update(skip_locked=True)
            .filter(
                status__in=[ProcessedMessage.Status.RECEIVED, ProcessedMessage.Status.PROCESSING],
                updated_at__lt=now - timedelta(seconds=stuck_after),
            )
            .order_by("updated_at")[:limit]
        )
        result.stuck = len(rows)
        # A step that moved recently means the message is alive, only slow.
        busy = set(
            SagaStep.objects.filter(message__in=rows, updated_at__gte=now - timedelta(seconds=stuck_after)).values_list(
                "message_id", flat=True
            )
        )
        todo = [row for row in rows if row.pk not in busy]
        result.stuck = len(todo)
        if todo:
            ProcessedMessage.objects.filter(pk__in=[r.pk for r in todo]).update(updated_at=now)

        def enqueue() -> None:
            fresh = [row for row in todo if row.status == ProcessedMessage.Status.RECEIVED]
            with progress("re-driven", len(todo)) as shown:
                restart(fresh)
                shown.advance(len(fresh))
                for row in todo:
                    if row.status == ProcessedMessage.Status.RECEIVED:
                        how = "restarted"
                    else:
                        how = redrive(row)
                        shown.advance()
                    result.redriven[how] = result.redriven.get(how, 0) + 1
                    log.warning(
                        "sweeper: %s stuck in %s since %s; %s",
                        row.processing_id,
                        row.status,
                        row.updated_at.isoformat(),
                        how,
                    )

        transaction.on_commit(enqueue)
    for business_id, lead_id in turns.stalled(now - timedelta(seconds=stuck_after), limit):
        started = turns.repair(business_id, lead_id)
        if started is not None:
            result.redriven["waiting started"] = result.redriven.get("waiting started", 0) + 1
            log.warning("sweeper: %s waited with no live message holding its conversation's turn; started", started)
    result.statuses = redrive_statuses(now - timedelta(seconds=stuck_after), limit)
    if purge:
        cutoff = now - timedelta(days=settings.INBOX_RETENTION_DAYS)
        old = ProcessedMessage.objects.filter(
            status__in=[ProcessedMessage.Status.PROCESSED, ProcessedMessage.Status.FAILED], finished_at__lt=cutoff
        )
        # In chunks, oldest first: months of rows are never one long transaction.
        with progress("purged", old.count()) as shown:
            while chunk := list(old.order_by("finished_at").values_list("pk", flat=True)[:PURGE_CHUNK]):
                deleted, _ = ProcessedMessage.objects.filter(pk__in=chunk).delete()
                result.purged += deleted
                shown.advance(len(chunk))
        # Applied statuses are kept as long as the inbox rows they speak of.
        DeliveryStatus.objects.filter(received_at__lt=cutoff).exclude(outcome=DeliveryStatus.Outcome.PENDING).delete()
        purge_raw(now=now)
    return result
