"""Taking a batch of Kafka records into Postgres.

Every record ends as exactly one of: a new inbox row, a counted duplicate, or
a dead letter. All three are keyed by the record's Kafka coordinates, so
reading the same batch again (after a crash before the offset commit) changes
nothing and is told apart from a real duplicate: a redelivered record finds
its own row, a duplicate finds a row taken in from other coordinates.

A processing_id is unique across businesses: a record whose processing_id is
already taken by another business's message is a conflict, dead-lettered as
`processing_id_conflict`, never counted as a duplicate of someone else's message.

take_in_and_hand_off is what ingest and replay call. It tells an outage (the
database or the broker unreachable), which it raises for the caller to pause
and retry, from any other error, which some record of the batch must have
caused: it splits the batch in halves until the record is alone, dead-letters
that record as `unprocessable` (its raw bytes, key and headers kept, the error
class recorded), and takes in the rest as usual. So no record can stop ingest.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

from django.db import connection, transaction
from django.utils import timezone

from core.metrics import counters
from core.tracing import RecordTrace
from dlq.models import DeadLetter
from leads.models import Business
from whatsapp.contract import AIResultEvent, ContractError, parse_event, to_payload
from whatsapp.kafka import Record
from whatsapp.models import DuplicateDelivery, ProcessedMessage
from whatsapp.pipeline import hand_off

log = logging.getLogger(__name__)

UNPROCESSABLE = "unprocessable"
PROCESSING_ID_CONFLICT = "processing_id_conflict"
# Where a record that cannot be taken in failed: storing its batch, or handing it to Celery.
STORE = "store"
HAND_OFF = "hand-off"


@dataclass
class Rejection:
    record: Record
    reason: str
    error_class: str
    message: str
    event: AIResultEvent | None = None
    traceback: str = ""


@dataclass
class IntakeResult:
    new: list[tuple[str, int]] = field(default_factory=list)
    """(processing_id, saga_run) of rows to hand to the pipeline: new, or re-read and still RECEIVED."""
    created: int = 0
    redelivered: int = 0
    duplicates: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)
    traces: dict[str, RecordTrace] = field(default_factory=dict)
    """processing_id -> the record's live trace, for the rows in `new` whose stored trace it is."""
    rows: dict[str, tuple[str, str]] = field(default_factory=dict)
    """processing_id -> (business_id, stored trace id) of the rows in `new`, for hand_off."""
    unprocessable: list[tuple[str, int, int]] = field(default_factory=list)
    """Coordinates of the records isolated from their batch and dead-lettered as unprocessable."""

    def merge(self, other: IntakeResult) -> None:
        self.created += other.created
        self.redelivered += other.redelivered
        self.duplicates += other.duplicates
        self.dead_lettered.update(other.dead_lettered)
        self.unprocessable.extend(other.unprocessable)

    def finish_traces(self, status: str = "ok") -> None:
        for trace in self.traces.values():
            trace.finish(status)


def validate(
    records: list[Record],
    traces: dict[tuple[str, int, int], RecordTrace] | None = None,
) -> tuple[list[tuple[Record, AIResultEvent]], list[Rejection]]:
    """Check each record against the contract and the known businesses."""
    traces = traces if traces is not None else {r.coordinates: RecordTrace(r) for r in records}
    valid: list[tuple[Record, AIResultEvent]] = []
    rejected: list[Rejection] = []
    for record in records:
        trace = traces[record.coordinates]
        try:
            with trace.child("whatsapp.validate", "validate the event against the contract"):
                event = parse_event(record.value)
            trace.about(processing_id=event.processing_id, intent=event.intent.value, lead_id=event.lead_id)
            valid.append((record, event))
        except ContractError as exc:
            rejected.append(Rejection(record, exc.reason, "ContractError", str(exc)))
        except Exception as exc:  # a bug in validation must not lose the record (logged at ERROR when stored)
            rejected.append(
                Rejection(
                    record,
                    UNPROCESSABLE,
                    _class_name(exc),
                    f"validation failed unexpectedly: {_class_name(exc)} {WITHHELD}",
                    traceback=_frames(exc),
                )
            )

    # Tenant resolution is one query for the batch: each record's span covers it and its own check.
    spans = {
        record.coordinates: traces[record.coordinates].child("whatsapp.tenant", "resolve the business and tenant")
        for record, _ in valid
    }
    business_ids = {event.business_id for _, event in valid}
    businesses = {b.business_id: b for b in Business.objects.filter(business_id__in=business_ids, is_active=True)}
    accepted: list[tuple[Record, AIResultEvent]] = []
    for record, event in valid:
        spans[record.coordinates].finish()
        business = businesses.get(event.business_id)
        if business is None:
            rejected.append(
                Rejection(
                    record,
                    "unknown_business",
                    "ContractError",
                    f"business_id: no active business {event.business_id!r}",
                    event,
                )
            )
        elif event.tenant_id is not None and event.tenant_id != business.tenant_id:
            rejected.append(
                Rejection(
                    record,
                    "tenant_mismatch",
                    "ContractError",
                    f"tenant_id: {event.tenant_id!r} is not the tenant of business {event.business_id!r}",
                    event,
                )
            )
        else:
            accepted.append((record, event))
    return accepted, rejected


def dead_letter_from_rejection(rejection: Rejection, trace_id: str) -> DeadLetter:
    record, event = rejection.record, rejection.event
    return DeadLetter.for_ingest(
        record,
        reason=rejection.reason,
        error_class=storable_text(rejection.error_class),
        error_message=storable_text(rejection.message),
        traceback=storable_text(rejection.traceback),
        trace_id=trace_id,
        payload=to_payload(event) if event is not None else None,
        processing_id=event.processing_id if event is not None else "",
        business_id=event.business_id if event is not None else "",
        lead_id=event.lead_id if event is not None else "",
    )


def inbox_values(record: Record, event: AIResultEvent, trace_id: str) -> dict[str, Any]:
    """The new inbox row's columns (the rest take their defaults)."""
    return {
        "processing_id": event.processing_id,
        "business_id": event.business_id,
        "lead_id": event.lead_id,
        "intent": event.intent.value,
        "payload": to_payload(event),
        "kafka_topic": record.topic,
        "kafka_partition": record.partition,
        "kafka_offset": record.offset,
        "kafka_timestamp": record.timestamp,
        "kafka_timestamp_ms": record.unconverted_millis,
        "trace_id": trace_id,
    }


def insert_inbox_rows(rows: list[dict[str, Any]]) -> set[tuple[str, int, int]]:
    """Insert the rows whose processing_id is not taken yet, in one statement; returns the
    Kafka coordinates of those inserted (the others' processing_id was there before).

    INSERT ... SELECT FROM jsonb_populate_recordset(...) ON CONFLICT DO NOTHING RETURNING,
    with the batch as one JSON document, instead of bulk_create: Django sends a bulk insert
    as one array per column, which psycopg's client-side binding quotes element by element in
    Python, and bulk_create cannot say which rows it inserted, which took a SELECT before and
    one after. Every field of the model is written: a field not given takes its default, as
    bulk_create would give it (auto_now and auto_now_add fields the time of the batch). The
    rows are keyed by column (ProcessedMessage's columns are its fields' names)."""
    fields = [f for f in ProcessedMessage._meta.local_concrete_fields if not f.primary_key]
    now = timezone.now()
    defaults = {
        f.column: now if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False) else f.get_default()
        for f in fields
    }
    document = json.dumps([{**defaults, **row} for row in rows], default=str)
    quote = connection.ops.quote_name
    # A concrete field always has a column; the stubs allow None.
    table, columns = quote(ProcessedMessage._meta.db_table), ", ".join(quote(cast(str, f.column)) for f in fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM jsonb_populate_recordset(NULL::{table}, %s) "
            f"ON CONFLICT ({quote('processing_id')}) DO NOTHING "
            f"RETURNING {quote('kafka_topic')}, {quote('kafka_partition')}, {quote('kafka_offset')}",
            [document],
        )
        return {tuple(row) for row in cursor.fetchall()}


def take_in(records: list[Record], *, source: str = "kafka") -> IntakeResult:
    """Store one batch in a single transaction and say what became of each record.

    Each record gets its trace (RecordTrace); the traces of the rows to hand on are returned
    in `result.traces` for hand_off to finish, the others are finished here. `source` labels
    the received-messages metric (kafka, requeue, replay)."""
    traces = {r.coordinates: RecordTrace(r) for r in records}
    try:
        result, logged = _take_in(records, traces, source)
    except BaseException:
        for trace in traces.values():
            trace.finish("unavailable")
        raise
    for trace, level, message, args in logged:
        trace.log(log, level, message, *args)
    handed_on = {id(t) for t in result.traces.values()}
    for trace in traces.values():
        if id(trace) not in handed_on:
            trace.finish()
    return result


def _take_in(
    records: list[Record], traces: dict[tuple[str, int, int], RecordTrace], source: str
) -> tuple[IntakeResult, list[tuple[RecordTrace, int, str, tuple]]]:
    result = IntakeResult()
    logged: list[tuple[RecordTrace, int, str, tuple]] = []
    accepted, rejected = validate(records, traces)
    with transaction.atomic():
        if rejected:
            _store_rejections(rejected, traces, result, logged)
        if not accepted:
            return result, logged

        # One INSERT ... ON CONFLICT DO NOTHING for the whole batch (the dedupe); every
        # record's span covers it. Only the records whose row was there before are looked up.
        spans = [traces[r.coordinates].child("whatsapp.dedupe", "insert into the inbox (dedupe)") for r, _ in accepted]
        inserted = insert_inbox_rows([inbox_values(r, e, traces[r.coordinates].trace_id) for r, e in accepted])
        for span in spans:
            span.set_data("batch_size", len(accepted))
            span.finish()
        there_before = {e.processing_id for r, e in accepted if r.coordinates not in inserted}
        stored = (
            {
                row["processing_id"]: row
                for row in ProcessedMessage.objects.filter(processing_id__in=there_before).values(
                    "processing_id",
                    "business_id",
                    "kafka_topic",
                    "kafka_partition",
                    "kafka_offset",
                    "status",
                    "saga_run",
                    "trace_id",
                )
            }
            if there_before
            else {}
        )
        duplicates: list[DuplicateDelivery] = []
        conflicts: list[Rejection] = []
        created_by_business: Counter[str] = Counter()
        for record, event in accepted:
            trace = traces[record.coordinates]
            if record.coordinates in inserted:
                result.created += 1
                created_by_business[event.business_id] += 1
                logged.append(
                    (
                        trace,
                        logging.INFO,
                        "ingest: taken in (%s, confidence %.2f)",
                        (event.intent.value, event.confidence),
                    )
                )
                result.new.append((event.processing_id, 1))
                result.rows[event.processing_id] = (event.business_id, trace.trace_id)
                result.traces[event.processing_id] = trace
                continue
            row = stored[event.processing_id]
            if (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"]) != record.coordinates:
                if row["business_id"] != event.business_id:
                    # Someone else's message: not a redelivery of this one.
                    conflicts.append(
                        Rejection(
                            record,
                            PROCESSING_ID_CONFLICT,
                            "ProcessingIdConflict",
                            "processing_id: already taken in for another business's message (from "
                            f"{row['kafka_topic']}[{row['kafka_partition']}]@{row['kafka_offset']}); "
                            "a processing_id must be unique across businesses",
                            event,
                        )
                    )
                    continue
                duplicates.append(
                    DuplicateDelivery(
                        processing_id=event.processing_id,
                        kafka_topic=record.topic,
                        kafka_partition=record.partition,
                        kafka_offset=record.offset,
                    )
                )
                continue
            # This record's own row, read again after a crash: handed on again only if
            # the pipeline never claimed it.
            result.redelivered += 1
            if row["status"] == ProcessedMessage.Status.RECEIVED:
                result.new.append((event.processing_id, row["saga_run"]))
                result.rows[event.processing_id] = (row["business_id"], row["trace_id"])
        counters.received(created_by_business, source=source)
        if conflicts:
            _store_rejections(conflicts, traces, result, logged)
        if duplicates:
            seen = set(
                DuplicateDelivery.objects.filter(
                    kafka_topic__in={d.kafka_topic for d in duplicates},
                    kafka_offset__in={d.kafka_offset for d in duplicates},
                ).values_list("kafka_topic", "kafka_partition", "kafka_offset")
            )
            fresh = [d for d in duplicates if (d.kafka_topic, d.kafka_partition, d.kafka_offset) not in seen]
            DuplicateDelivery.objects.bulk_create(fresh, ignore_conflicts=True)
            result.duplicates = len(fresh)
            counters.duplicates(len(fresh))
            for duplicate in fresh:
                trace = traces[(duplicate.kafka_topic, duplicate.kafka_partition, duplicate.kafka_offset)]
                logged.append((trace, logging.INFO, "ingest: duplicate of a message already taken in", ()))
    return result, logged


def _store_rejections(
    rejected: list[Rejection],
    traces: dict[tuple[str, int, int], RecordTrace],
    result: IntakeResult,
    logged: list[tuple[RecordTrace, int, str, tuple]],
) -> None:
    # A record read again after a crash finds its dead letter already there: not counted twice.
    already = _dead_lettered_before([r.record for r in rejected])
    DeadLetter.objects.bulk_create(
        [dead_letter_from_rejection(r, traces[r.record.coordinates].trace_id) for r in rejected], ignore_conflicts=True
    )
    result.dead_lettered.update(r.reason for r in rejected)
    fresh = [r for r in rejected if r.record.coordinates not in already]
    counters.rejected(Counter(r.reason for r in fresh))
    for r in fresh:
        level = logging.ERROR if r.reason == UNPROCESSABLE else logging.WARNING
        logged.append(
            (
                traces[r.record.coordinates],
                level,
                "ingest: record %s[%s]@%s dead-lettered: %s (%s)",
                (r.record.topic, r.record.partition, r.record.offset, r.reason, r.error_class),
            )
        )


def _dead_lettered_before(records: list[Record]) -> set[tuple[str, int | None, int | None]]:
    return set(
        DeadLetter.objects.filter(
            stage=DeadLetter.Stage.INGEST,
            kafka_topic__in={r.topic for r in records},
            kafka_offset__in={r.offset for r in records},
        ).values_list("kafka_topic", "kafka_partition", "kafka_offset")
    )


# --- no record stops ingest -----------------------------------------------------------------
def is_outage(exc: BaseException) -> bool:
    """A dependency is away (the database or the broker unreachable): retry the whole batch
    later. Anything else (an IntegrityError, a DataError, a bug) is the batch's own fault."""
    from django.db import InterfaceError, OperationalError
    from kombu.exceptions import BatchPublishError  # type: ignore[attr-defined]  # new in kombu 5.7; its stubs predate it
    from kombu.exceptions import OperationalError as BrokerError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeout

    if isinstance(exc, BatchPublishError) and exc.__cause__ is not None:
        # The hand-off's one Redis call for the batch failed (some of its messages may have
        # gone out: sending them again is harmless); what it failed on tells.
        return is_outage(exc.__cause__)
    return isinstance(exc, (OperationalError, InterfaceError, BrokerError, RedisConnectionError, RedisTimeout, OSError))


def take_in_and_hand_off(records: list[Record], *, source: str = "kafka") -> IntakeResult:
    """Take in a batch and hand its new rows to the pipeline. Raises only on an outage.

    Any other error isolates the record(s) causing it: the batch is split in halves, each
    taken in on its own, down to the single record, which is dead-lettered as unprocessable.
    A batch without such a record costs nothing more than before; one bad record among n
    costs about 2·log2(n) more attempts."""
    try:
        result = take_in(records, source=source)
    except Exception as exc:
        if is_outage(exc):
            raise
        return _isolate(records, exc, source=source, stage=STORE)
    try:
        hand_off(result.new, result.traces, result.rows)
    except Exception as exc:
        result.finish_traces("unavailable")
        if is_outage(exc):
            raise
        # The rows are stored; taking the halves in again finds them (re-read) and hands them off.
        return _isolate(records, exc, source=source, stage=HAND_OFF)
    return result


def _isolate(records: list[Record], exc: BaseException, *, source: str, stage: str) -> IntakeResult:
    if len(records) == 1:
        return dead_letter_unprocessable(records[0], exc, stage=stage)
    middle = len(records) // 2
    result = IntakeResult()
    for half in (records[:middle], records[middle:]):
        part = take_in_and_hand_off(half, source=source)
        result.merge(part)
        result.new.extend(part.new)
    return result


# An error's own text may quote the record (Postgres quotes the JSON around a bad token), so
# dead letters and log lines keep its class and where it was raised, never its message.
WITHHELD = "(its message is not kept: it may quote the record)"


def dead_letter_unprocessable(record: Record, exc: BaseException, *, stage: str) -> IntakeResult:
    """Dead-letter one record that passed the contract but could not be taken in.

    Built so the insert cannot fail on the record's content: the raw bytes and key go to
    bytea, the headers in their base64-safe form, the timestamp as a datetime only when it is
    one; no payload (it may be what could not be stored), ids only from a parse that passes
    the contract, and an error text of our own. A record that failed at hand-off has an inbox
    row nobody has started: it is removed in the same transaction, so the record ends as
    exactly one thing, and a requeue takes it in again."""
    trace = RecordTrace(record)
    pid = business_id = lead_id = ""
    try:
        event = parse_event(record.value)
        pid, business_id, lead_id = event.processing_id, event.business_id, event.lead_id
    except Exception:
        pass
    what = "stored" if stage == STORE else "handed to the pipeline"
    entry = DeadLetter.for_ingest(
        record,
        reason=UNPROCESSABLE,
        error_class=storable_text(_class_name(exc)),
        error_message=f"the record passed the contract but could not be {what}: {_class_name(exc)} {WITHHELD}",
        traceback=_frames(exc),
        trace_id=trace.trace_id,
        processing_id=pid,
        business_id=business_id,
        lead_id=lead_id,
    )
    with transaction.atomic():
        if stage == HAND_OFF:
            ProcessedMessage.objects.filter(
                kafka_topic=record.topic,
                kafka_partition=record.partition,
                kafka_offset=record.offset,
                status=ProcessedMessage.Status.RECEIVED,
                saga_run=1,
                started_at__isnull=True,
            ).delete()
        fresh = not _dead_lettered_before([record])
        DeadLetter.objects.bulk_create([entry], ignore_conflicts=True)
        if fresh:
            counters.rejected({UNPROCESSABLE: 1})
    if fresh:
        trace.log(
            log,
            logging.ERROR,
            "ingest: record %s[%s]@%s could not be %s (%s); dead-lettered as %s, the rest of its batch goes on",
            record.topic,
            record.partition,
            record.offset,
            what,
            _class_name(exc),
            UNPROCESSABLE,
        )
    trace.finish("internal_error")
    result = IntakeResult()
    result.dead_lettered[UNPROCESSABLE] += 1
    result.unprocessable.append(record.coordinates)
    return result


def storable_text(text: str) -> str:
    """Text Postgres takes: no NUL, no lone surrogate."""
    text = text.replace("\x00", "\\x00")
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _class_name(exc: BaseException) -> str:
    return type(exc).__name__


def _frames(exc: BaseException) -> str:
    """Where the error was raised (code lines only; see WITHHELD), for the dead letter."""
    return "".join(traceback.format_tb(exc.__traceback__)) + f"{_class_name(exc)} {WITHHELD}\n"
