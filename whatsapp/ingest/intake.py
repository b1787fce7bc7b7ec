"""Taking a batch of Kafka records into Postgres.

Every record ends as exactly one of: a new inbox row, a counted duplicate, or
a dead letter. All three are keyed by the record's Kafka coordinates, so
reading the same batch again (after a crash before the offset commit) changes
nothing and is told apart from a real duplicate: a redelivered record finds
its own row, a duplicate finds a row taken in from other coordinates.

A processing_id is unique across businesses: a record whose processing_id is
already taken by another business's message is a conflict, dead-lettered as
`processing_id_conflict`, never counted as a duplicate of someone else's message.

What cannot be taken in whole is isolated record by record (whatsapp.ingest.isolate).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

from django.db import connection, transaction
from django.utils import timezone

from core.metrics import counters
from core.tracing import RecordTrace
from dlq.models import DeadLetter
from whatsapp.contracts.result import AIResultEvent, to_payload
from whatsapp.ingest.validate import (
    PROCESSING_ID_CONFLICT,
    UNPROCESSABLE,
    ContractOutcomes,
    Rejection,
    dead_letter_from_rejection,
    validate,
)
from whatsapp.kafka import Record
from whatsapp.models import DuplicateDelivery, ProcessedMessage
from whatsapp.pipeline import turns

log = logging.getLogger(__name__)


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
    waiting: list[tuple[str, int]] = field(default_factory=list)
    """(processing_id, saga_run) of new rows behind another message of their customer's (WAITING)."""

    def merge(self, other: IntakeResult) -> None:
        self.created += other.created
        self.redelivered += other.redelivered
        self.duplicates += other.duplicates
        self.dead_lettered.update(other.dead_lettered)
        self.unprocessable.extend(other.unprocessable)

    def finish_traces(self, status: str = "ok") -> None:
        for trace in self.traces.values():
            trace.finish(status)


def inbox_values(record: Record, event: AIResultEvent, trace_id: str) -> dict[str, Any]:
    """The new inbox row's columns (the rest take their defaults)."""
    return {
        "processing_id": event.processing_id,
        "business_id": event.business_id,
        "lead_id": event.lead_id,
        "intent": event.intent.value,
        "payload": to_payload(event),
        "sent_at": event.message.received_at,
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


def take_in(records: list[Record], *, source: str = "kafka", outcomes: ContractOutcomes | None = None) -> IntakeResult:
    """Store one batch in a single transaction and say what became of each record.

    Each record gets its trace (RecordTrace); the traces of the rows to hand on are returned
    in `result.traces` for hand_off to finish, the others are finished here. `source` labels
    the received-messages metric (kafka, requeue, replay). `outcomes` keeps the records'
    contract outcomes across the attempts of one batch (validate)."""
    traces = {r.coordinates: RecordTrace(r) for r in records}
    try:
        result, logged = _take_in(records, traces, source, outcomes)
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
    records: list[Record],
    traces: dict[tuple[str, int, int], RecordTrace],
    source: str,
    outcomes: ContractOutcomes | None,
) -> tuple[IntakeResult, list[tuple[RecordTrace, int, str, tuple]]]:
    result = IntakeResult()
    logged: list[tuple[RecordTrace, int, str, tuple]] = []
    accepted, rejected = validate(records, traces, outcomes=outcomes)
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
        _queue_behind_earlier(accepted, inserted, result)
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


def _queue_behind_earlier(
    accepted: list[tuple[Record, AIResultEvent]], inserted: set[tuple[str, int, int]], result: IntakeResult
) -> None:
    """The new rows ask for their conversation's turn (whatsapp.pipeline.turns): those behind
    another message of their customer wait as WAITING rows and are not handed on now."""
    waiting = turns.take(
        turns.Candidate(e.business_id, e.lead_id, e.processing_id, 1, e.message.received_at, r.offset)
        for r, e in accepted
        if r.coordinates in inserted
    )
    if waiting:
        result.waiting = [run for run in result.new if run[0] in waiting]
        result.new = [run for run in result.new if run[0] not in waiting]
        for pid in waiting:
            result.rows.pop(pid, None)
            result.traces.pop(pid, None)


def _store_rejections(
    rejected: list[Rejection],
    traces: dict[tuple[str, int, int], RecordTrace],
    result: IntakeResult,
    logged: list[tuple[RecordTrace, int, str, tuple]],
) -> None:
    # A record read again after a crash finds its dead letter already there: not counted twice.
    already = dead_lettered_before([r.record for r in rejected])
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


def dead_lettered_before(records: list[Record]) -> set[tuple[str, int | None, int | None]]:
    return set(
        DeadLetter.objects.filter(
            stage=DeadLetter.Stage.INGEST,
            kafka_topic__in={r.topic for r in records},
            kafka_offset__in={r.offset for r in records},
        ).values_list("kafka_topic", "kafka_partition", "kafka_offset")
    )
