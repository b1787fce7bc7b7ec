"""Taking a batch of Kafka records into Postgres.

Every record ends as exactly one of: a new inbox row, a counted duplicate, or
a dead letter. All three are keyed by the record's Kafka coordinates, so
reading the same batch again (after a crash before the offset commit) changes
nothing and is told apart from a real duplicate: a redelivered record finds
its own row, a duplicate finds a row taken in from other coordinates.
"""
from __future__ import annotations

import logging
import traceback
from collections import Counter
from dataclasses import dataclass, field

from django.db import transaction

from dlq.models import DeadLetter
from leads.models import Business
from whatsapp import metrics
from whatsapp.contract import AIResultEvent, ContractError, parse_event, to_payload
from whatsapp.kafka import Record
from whatsapp.models import DuplicateDelivery, ProcessedMessage
from whatsapp.tracing import RecordTrace

log = logging.getLogger(__name__)


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

    def merge(self, other: IntakeResult) -> None:
        self.created += other.created
        self.redelivered += other.redelivered
        self.duplicates += other.duplicates
        self.dead_lettered.update(other.dead_lettered)

    def finish_traces(self, status: str = "ok") -> None:
        for trace in self.traces.values():
            trace.finish(status)


def validate(records: list[Record],
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
        except Exception as exc:  # a bug in validation must not lose the record
            with trace.active():
                log.exception("unexpected error validating record %s", record.coordinates)
            rejected.append(
                Rejection(record, "ingest_error", type(exc).__name__, str(exc)[:2000], traceback=traceback.format_exc())
            )

    # Tenant resolution is one query for the batch: each record's span covers it and its own check.
    spans = {record.coordinates: traces[record.coordinates].child("whatsapp.tenant", "resolve the business and tenant")
             for record, _ in valid}
    business_ids = {event.business_id for _, event in valid}
    businesses = {b.business_id: b for b in Business.objects.filter(business_id__in=business_ids, is_active=True)}
    accepted: list[tuple[Record, AIResultEvent]] = []
    for record, event in valid:
        spans[record.coordinates].finish()
        business = businesses.get(event.business_id)
        if business is None:
            rejected.append(
                Rejection(record, "unknown_business", "ContractError",
                          f"business_id: no active business {event.business_id!r}", event)
            )
        elif event.tenant_id is not None and event.tenant_id != business.tenant_id:
            rejected.append(
                Rejection(record, "tenant_mismatch", "ContractError",
                          f"tenant_id: {event.tenant_id!r} is not the tenant of business {event.business_id!r}", event)
            )
        else:
            accepted.append((record, event))
    return accepted, rejected


def dead_letter_from_rejection(rejection: Rejection, trace_id: str) -> DeadLetter:
    record, event = rejection.record, rejection.event
    return DeadLetter(
        raw_value=record.value,
        payload=to_payload(event) if event is not None else None,
        processing_id=event.processing_id if event is not None else "",
        business_id=event.business_id if event is not None else "",
        lead_id=event.lead_id if event is not None else "",
        kafka_topic=record.topic,
        kafka_partition=record.partition,
        kafka_offset=record.offset,
        kafka_timestamp=record.timestamp,
        kafka_key=record.key,
        kafka_headers=record.headers_json(),
        stage=DeadLetter.Stage.INGEST,
        reason=rejection.reason,
        error_class=rejection.error_class,
        error_message=rejection.message,
        traceback=rejection.traceback,
        trace_id=trace_id,
    )


def inbox_row(record: Record, event: AIResultEvent, trace_id: str) -> ProcessedMessage:
    return ProcessedMessage(
        processing_id=event.processing_id,
        business_id=event.business_id,
        lead_id=event.lead_id,
        intent=event.intent.value,
        payload=to_payload(event),
        kafka_topic=record.topic,
        kafka_partition=record.partition,
        kafka_offset=record.offset,
        kafka_timestamp=record.timestamp,
        trace_id=trace_id,
    )


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
        with trace.active():
            log.log(level, message, *args)
    handed_on = {id(t) for t in result.traces.values()}
    for trace in traces.values():
        if id(trace) not in handed_on:
            trace.finish()
    return result


def _take_in(records: list[Record], traces: dict[tuple[str, int, int], RecordTrace],
             source: str) -> tuple[IntakeResult, list[tuple[RecordTrace, int, str, tuple]]]:
    result = IntakeResult()
    logged: list[tuple[RecordTrace, int, str, tuple]] = []
    accepted, rejected = validate(records, traces)
    with transaction.atomic():
        if rejected:
            # A record read again after a crash finds its dead letter already there: not counted twice.
            already = _dead_lettered_before([r.record for r in rejected])
            DeadLetter.objects.bulk_create(
                [dead_letter_from_rejection(r, traces[r.record.coordinates].trace_id) for r in rejected],
                ignore_conflicts=True)
            result.dead_lettered.update(r.reason for r in rejected)
            fresh_rejections = [r for r in rejected if r.record.coordinates not in already]
            metrics.rejected(Counter(r.reason for r in fresh_rejections))
            for r in fresh_rejections:
                logged.append((traces[r.record.coordinates], logging.WARNING,
                               "ingest: record %s[%s]@%s dead-lettered: %s",
                               (r.record.topic, r.record.partition, r.record.offset, r.reason)))
        if not accepted:
            return result, logged

        pids = {e.processing_id for _, e in accepted}
        known_before = set(ProcessedMessage.objects.filter(processing_id__in=pids).values_list("processing_id", flat=True))
        # One INSERT ... ON CONFLICT DO NOTHING for the whole batch (the dedupe); every
        # record's span covers it.
        spans = [traces[r.coordinates].child("whatsapp.dedupe", "insert into the inbox (dedupe)") for r, _ in accepted]
        ProcessedMessage.objects.bulk_create(
            [inbox_row(r, e, traces[r.coordinates].trace_id) for r, e in accepted], ignore_conflicts=True)
        for span in spans:
            span.set_data("batch_size", len(accepted))
            span.finish()
        stored = {
            row["processing_id"]: row
            for row in ProcessedMessage.objects.filter(processing_id__in=pids).values(
                "processing_id", "kafka_topic", "kafka_partition", "kafka_offset", "status", "saga_run", "trace_id"
            )
        }
        duplicates: list[DuplicateDelivery] = []
        created_by_business: Counter[str] = Counter()
        for record, event in accepted:
            row = stored[event.processing_id]
            trace = traces[record.coordinates]
            if (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"]) != record.coordinates:
                duplicates.append(
                    DuplicateDelivery(
                        processing_id=event.processing_id,
                        kafka_topic=record.topic,
                        kafka_partition=record.partition,
                        kafka_offset=record.offset,
                    )
                )
                continue
            # This record is the row's own: new now, or read again after a crash
            # (then it is handed on again only if the pipeline never claimed it).
            if event.processing_id in known_before:
                result.redelivered += 1
            else:
                result.created += 1
                created_by_business[event.business_id] += 1
                logged.append((trace, logging.INFO, "ingest: taken in (%s, confidence %.2f)",
                               (event.intent.value, event.confidence)))
            if row["status"] == ProcessedMessage.Status.RECEIVED:
                result.new.append((event.processing_id, row["saga_run"]))
                if row["trace_id"] == trace.trace_id:
                    result.traces[event.processing_id] = trace
        metrics.received(created_by_business, source=source)
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
            metrics.duplicates(len(fresh))
            for duplicate in fresh:
                trace = traces[(duplicate.kafka_topic, duplicate.kafka_partition, duplicate.kafka_offset)]
                logged.append((trace, logging.INFO, "ingest: duplicate of a message already taken in", ()))
    return result, logged


def _dead_lettered_before(records: list[Record]) -> set[tuple[str, int, int]]:
    return set(
        DeadLetter.objects.filter(
            stage=DeadLetter.Stage.INGEST,
            kafka_topic__in={r.topic for r in records},
            kafka_offset__in={r.offset for r in records},
        ).values_list("kafka_topic", "kafka_partition", "kafka_offset")
    )
