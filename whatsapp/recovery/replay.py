"""Replaying records from Kafka: read a range again and feed it through the
same intake path ingest uses.

The dedupe key stays in charge: a record whose processing_id is already in the
inbox runs nothing again (it is reported as a duplicate), a record never taken
in (skipped, or purged after INBOX_RETENTION_DAYS) is taken in and processed
like a new one, and an invalid record finds its dead letter already there. As
in ingest, a record that cannot be taken in is isolated and dead-lettered as
unprocessable, and the rest of its batch goes on; only an outage stops a replay.
Only ``force`` re-runs finished messages, each as a new saga run: executors key
their effects by (processing_id, run, step, action), so a forced run acts once
more, never twice within a run.

Records are read with a consumer of their own that is assigned partitions and
never commits, so the ingest group's offsets are untouched (whatsapp.recovery.kafka_range).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.utils import timezone as dj_timezone

from config.progress import ProgressFactory, quiet
from dlq.models import DeadLetter
from whatsapp.ingest.isolate import take_in_and_hand_off
from whatsapp.ingest.validate import PROCESSING_ID_CONFLICT, UNPROCESSABLE, validate
from whatsapp.kafka import Record
from whatsapp.models import ProcessedMessage
from whatsapp.pipeline import turns
from whatsapp.pipeline.hand_off import hand_off
from whatsapp.recovery.kafka_range import Selection, read_range

log = logging.getLogger(__name__)

FINISHED = (ProcessedMessage.Status.PROCESSED, ProcessedMessage.Status.FAILED)


@dataclass
class Outcome:
    """What replay did (or, in a dry run, would do) with one record."""

    topic: str
    partition: int
    offset: int
    timestamp: str | None
    processing_id: str
    outcome: str
    detail: str = ""


# What each outcome means, for --help and the summary.
OUTCOMES = {
    "new": "never taken in before: taken in now and sent through the pipeline",
    "duplicate": "already processed: the dedupe key stops it, nothing runs again",
    "in_flight": "already taken in and its run has not ended: left to that run",
    "rerun": "already processed, re-run as a new saga run (--force)",
    "invalid": "dead-lettered at ingest (fails the contract, its processing_id is another business's, or it "
    "cannot be taken in): its dead letter is kept once, by its coordinates",
}


@dataclass
class ReplayResult:
    read: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    records: list[Outcome] = field(default_factory=list)

    def add(self, outcome: Outcome, *, keep: bool) -> None:
        self.counts[outcome.outcome] += 1
        if keep:
            self.records.append(outcome)

    def as_dict(self, *, with_records: bool) -> dict:
        data: dict = {"read": self.read, **self.counts}
        if with_records:
            data["records"] = [asdict(r) for r in self.records]
        return data

    def summary(self) -> str:
        parts = [f"{self.counts[name]} {name.replace('_', ' ')}" for name in OUTCOMES]
        return f"{self.read} records in range: " + ", ".join(parts)


def classify(records: list[Record], *, force: bool, seen: dict[str, str]) -> list[Outcome]:
    """What replaying each record does, read from Postgres without writing.
    ``seen`` maps the processing_ids met earlier in this replay to their business:
    a second record of one message is a duplicate whatever happens to the first,
    one of another business is a conflict."""
    accepted, rejected = validate(records)
    outcomes: dict[tuple[str, int, int], Outcome] = {}
    for rejection in rejected:
        record = rejection.record
        pid = rejection.event.processing_id if rejection.event is not None else ""
        outcomes[record.coordinates] = _outcome(record, pid, "invalid", rejection.reason)

    pids = {event.processing_id for _, event in accepted}
    stored = {
        pid: (status, business)
        for pid, status, business in ProcessedMessage.objects.filter(processing_id__in=pids).values_list(
            "processing_id", "status", "business_id"
        )
    }
    for record, event in accepted:
        pid = event.processing_id
        owner = seen.get(pid, stored.get(pid, (None, event.business_id))[1])
        status = stored[pid][0] if pid in stored else ""
        if owner != event.business_id:
            # Another business's message holds this processing_id: dead-lettered, never a duplicate.
            outcomes[record.coordinates] = _outcome(record, pid, "invalid", PROCESSING_ID_CONFLICT)
            continue
        if pid in seen:
            kind = "duplicate"
        elif pid not in stored:
            kind = "new"
        elif status not in FINISHED:
            kind = "in_flight"
        else:
            kind = "rerun" if force else "duplicate"
        seen[pid] = event.business_id
        outcomes[record.coordinates] = _outcome(record, pid, kind, status)
    return [outcomes[r.coordinates] for r in records]


def _outcome(record: Record, processing_id: str, kind: str, detail: str) -> Outcome:
    stamp: str | None
    if record.timestamp is not None:
        stamp = record.timestamp.isoformat()
    else:  # no datetime can hold it: the raw milliseconds, as Kafka has them
        stamp = f"{record.timestamp_ms} ms" if record.timestamp_ms is not None else None
    return Outcome(record.topic, record.partition, record.offset, stamp, processing_id, kind, detail)


def start_new_runs(processing_ids: set[str], *, by: str) -> list[tuple[str, int]]:
    """Start a new saga run for each finished message, and hand the runs to
    the pipeline once they are committed. An open dead letter of such a
    message is marked REQUEUED, as a requeue from the DLQ would."""
    if not processing_ids:
        return []
    now = dj_timezone.now()
    runs: list[tuple[str, int]] = []
    with transaction.atomic():
        messages = (
            ProcessedMessage.objects.select_for_update()
            .filter(processing_id__in=processing_ids, status__in=FINISHED)
            .order_by("processing_id")
        )
        started = []
        for message in messages:
            message.start_new_run()
            started.append(message)
            runs.append((message.processing_id, message.saga_run))
        # Each waits its turn behind whatever of its customer's is running (whatsapp.pipeline.turns).
        waiting = turns.take(turns.candidate(m) for m in started)
        new_run = dict(runs)
        for entry in (
            DeadLetter.objects.select_for_update()
            .filter(processing_id__in=new_run, status=DeadLetter.Status.OPEN)
            .exclude(stage=DeadLetter.Stage.INGEST)
        ):
            entry.mark_requeued(by=by, saga_run=new_run[entry.processing_id], at=now)
        ready = [run for run in runs if run[0] not in waiting]
        transaction.on_commit(lambda: hand_off(ready))
    if runs:
        log.info(
            "replay: new saga run for %d messages (%s), by %s",
            len(runs),
            ", ".join(f"{pid} run {run}" for pid, run in runs[:20]) + (" ..." if len(runs) > 20 else ""),
            by,
        )
    return runs


def replay(
    selection: Selection,
    *,
    force: bool = False,
    dry_run: bool = False,
    keep_records: bool = False,
    by: str = "replay",
    progress: ProgressFactory = quiet,
) -> ReplayResult:
    """Replay the selected records; see the module docstring for what each one becomes."""
    result = ReplayResult()
    seen: dict[str, str] = {}
    with progress("read", None) as shown:
        for records in read_range(selection, on_total=shown.set_total, on_read=shown.advance):
            _replay_batch(records, result, seen, force=force, dry_run=dry_run, keep_records=keep_records, by=by)
    log.debug("replay %s: %s", selection.topic, result.summary())
    return result


def _replay_batch(
    records: list[Record],
    result: ReplayResult,
    seen: dict[str, str],
    *,
    force: bool,
    dry_run: bool,
    keep_records: bool,
    by: str,
) -> None:
    """One batch of records, as ingest takes it in (or, in a dry run, as it would)."""
    outcomes = classify(records, force=force, seen=seen)
    result.read += len(records)
    if not dry_run:
        # Exactly what ingest does with a batch ...
        intake = take_in_and_hand_off(records, source="replay")
        isolated = set(intake.unprocessable)
        for o in outcomes:
            if (o.topic, o.partition, o.offset) in isolated:
                o.outcome, o.detail = "invalid", UNPROCESSABLE
        # ... and, when forced, a new run for each finished message.
        runs = start_new_runs({o.processing_id for o in outcomes if o.outcome == "rerun"}, by=by)
        started = {pid for pid, _ in runs}
        for o in outcomes:
            if o.outcome == "rerun" and o.processing_id not in started:
                o.outcome = "in_flight"  # started again by someone else meanwhile
    for o in outcomes:
        result.add(o, keep=keep_records)


def parse_when(value: str, *, now: datetime | None = None) -> datetime:
    """An ISO-8601 time (UTC when it has no offset) or a span back from now:
    90s, 15m, 2h, 7d."""
    text = value.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if len(text) > 1 and text[-1] in units and text[:-1].isdigit():
        return (now or datetime.now(UTC)) - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r} is neither an ISO-8601 time nor a span like 15m, 2h, 7d") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
