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
never commits, so the ingest group's offsets are untouched.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from django.conf import settings
from django.db import transaction
from django.utils import timezone as dj_timezone

from config.progress import ProgressFactory, quiet
from dlq.models import DeadLetter
from whatsapp.ingest.isolate import take_in_and_hand_off
from whatsapp.ingest.validate import PROCESSING_ID_CONFLICT, UNPROCESSABLE, validate
from whatsapp.kafka import Record, consumer_config
from whatsapp.models import ProcessedMessage
from whatsapp.pipeline.hand_off import hand_off

log = logging.getLogger(__name__)

# Give up when the broker sends nothing at all for this long before every
# selected partition has reached its end.
READ_STALL_SECONDS = 30.0

FINISHED = (ProcessedMessage.Status.PROCESSED, ProcessedMessage.Status.FAILED)


class ReplayError(Exception):
    """The range cannot be read (unknown topic or partition, broker silent)."""


@dataclass(frozen=True)
class Selection:
    """Which records to replay. Offsets are per partition and inclusive; the
    time range is [since, until) on each record's Kafka timestamp."""

    topic: str
    partitions: tuple[int, ...] | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def wants(self, record: Record) -> bool:
        if self.from_offset is not None and record.offset < self.from_offset:
            return False
        if self.to_offset is not None and record.offset > self.to_offset:
            return False
        if self.since is None and self.until is None:
            return True
        # Compared in milliseconds, so a timestamp no datetime can hold (past 9999) still sorts.
        millis = record.millis
        if millis is None:
            return False
        if self.since is not None and millis < _millis(self.since):
            return False
        return self.until is None or millis < _millis(self.until)


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


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


# --- reading ------------------------------------------------------------------
def read_range(
    selection: Selection,
    *,
    batch_size: int | None = None,
    stall_seconds: float = READ_STALL_SECONDS,
    on_total: Callable[[int], None] | None = None,
    on_read: Callable[[int], None] | None = None,
) -> Iterator[list[Record]]:
    """Yield the selected records in batches, reading each selected partition
    from its start point to its end as it stands (or to --to-offset).
    on_total is told once how many records lie between the start points and the
    ends (what is read, not all of it selected), on_read how many each poll read."""
    batch_size = batch_size or settings.INGEST_BATCH_SIZE
    consumer = Consumer(
        consumer_config(
            f"{settings.KAFKA_GROUP_ID}.replay.{uuid.uuid4().hex[:8]}",
            **{"enable.partition.eof": True, "error_cb": _on_error},
        )
    )
    try:
        partitions = _partitions(consumer, selection)
        starts = _start_offsets(consumer, selection, partitions)
        if on_total is not None:
            on_total(_records_to_read(consumer, selection, starts))
        consumer.assign([TopicPartition(selection.topic, p, starts[p]) for p in partitions])
        pending = set(partitions)
        last_progress = _now()
        while pending:
            messages = consumer.consume(num_messages=batch_size, timeout=1.0)
            batch: list[Record] = []
            read = 0
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(message.partition())
                    elif error.fatal() or error.code() in (
                        KafkaError.UNKNOWN_TOPIC_OR_PART,
                        KafkaError._UNKNOWN_PARTITION,
                    ):
                        raise ReplayError(f"reading {selection.topic}[{message.partition()}]: {error.str()}")
                    else:
                        log.warning("replay: kafka: %s", error.str())
                    continue
                if message.partition() not in pending:
                    continue
                read += 1
                record = Record.from_message(message)
                if selection.to_offset is not None and record.offset >= selection.to_offset:
                    pending.discard(record.partition)
                if selection.wants(record):
                    batch.append(record)
            if read and on_read is not None:
                on_read(read)
            if messages:
                last_progress = _now()
            elif _now() - last_progress > stall_seconds:
                left = ", ".join(str(p) for p in sorted(pending))
                raise ReplayError(
                    f"no records from the broker for {stall_seconds:.0f}s; "
                    f"partitions {left} of {selection.topic} not read to their end"
                )
            if batch:
                yield batch
    finally:
        consumer.close()


def _partitions(consumer: Consumer, selection: Selection) -> list[int]:
    try:
        metadata = consumer.list_topics(selection.topic, timeout=10)
    except KafkaException as exc:
        raise ReplayError(f"cannot reach Kafka at {settings.KAFKA_BOOTSTRAP_SERVERS}: {exc}") from None
    topic = metadata.topics.get(selection.topic)
    if topic is None or topic.error is not None or not topic.partitions:
        raise ReplayError(f"topic {selection.topic!r} does not exist on {settings.KAFKA_BOOTSTRAP_SERVERS}")
    existing = sorted(topic.partitions)
    if selection.partitions is None:
        return existing
    missing = sorted(set(selection.partitions) - set(existing))
    if missing:
        raise ReplayError(
            f"topic {selection.topic!r} has partitions {existing[0]}..{existing[-1]}; "
            f"no partition {', '.join(map(str, missing))}"
        )
    return sorted(set(selection.partitions))


def _records_to_read(consumer: Consumer, selection: Selection, starts: dict[int, int]) -> int:
    """Records between each partition's start point and its end as it stands (or
    --to-offset), by the broker's watermarks: the total a progress bar counts to."""
    total = 0
    for partition, start in starts.items():
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(selection.topic, partition), timeout=10)
        except KafkaException as exc:
            raise ReplayError(f"cannot reach Kafka at {settings.KAFKA_BOOTSTRAP_SERVERS}: {exc}") from None
        first = low if start < 0 else max(start, low)
        end = high if selection.to_offset is None else min(high, selection.to_offset + 1)
        total += max(0, end - first)
    return total


def _start_offsets(consumer: Consumer, selection: Selection, partitions: list[int]) -> dict[int, int]:
    """Where to start reading each partition: --from-offset, else the first
    offset at or after --since, else the beginning.

    The time lookup (ListOffsets by timestamp) is only a shortcut: every
    record is still checked against the range by its own timestamp. That
    keeps the result exact on brokers whose answer is off; Tansu, the
    embedded broker, answers a time after the last record with offset 0
    instead of the log end, which costs a full read but loses nothing."""
    starts = dict.fromkeys(partitions, selection.from_offset if selection.from_offset is not None else OFFSET_BEGINNING)
    if selection.since is None or selection.from_offset is not None:
        return starts
    millis = int(selection.since.timestamp() * 1000)
    try:
        found = consumer.offsets_for_times([TopicPartition(selection.topic, p, millis) for p in partitions], timeout=10)
    except KafkaException as exc:
        log.warning("replay: offsets by time unavailable (%s); reading from the beginning", exc)
        return starts
    for tp in found:
        if tp.error is None and tp.offset >= 0:
            starts[tp.partition] = tp.offset
    return starts


def _on_error(error: KafkaError) -> None:
    log.log(logging.ERROR if error.fatal() else logging.WARNING, "replay: kafka: %s", error)


def _now() -> float:
    return time.monotonic()


# --- deciding and doing -------------------------------------------------------
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
        for message in messages:
            message.start_new_run()
            runs.append((message.processing_id, message.saga_run))
        new_run = dict(runs)
        for entry in (
            DeadLetter.objects.select_for_update()
            .filter(processing_id__in=new_run, status=DeadLetter.Status.OPEN)
            .exclude(stage=DeadLetter.Stage.INGEST)
        ):
            entry.mark_requeued(by=by, saga_run=new_run[entry.processing_id], at=now)
        transaction.on_commit(lambda: hand_off(runs))
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
