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
from whatsapp.contract import AIResultEvent, ContractError, parse_event, to_payload
from whatsapp.kafka import Record
from whatsapp.models import DuplicateDelivery, ProcessedMessage
from whatsapp.tracing import trace_id_from_headers

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

    def merge(self, other: IntakeResult) -> None:
        self.created += other.created
        self.redelivered += other.redelivered
        self.duplicates += other.duplicates
        self.dead_lettered.update(other.dead_lettered)


def validate(records: list[Record]) -> tuple[list[tuple[Record, AIResultEvent]], list[Rejection]]:
    """Check each record against the contract and the known businesses."""
    valid: list[tuple[Record, AIResultEvent]] = []
    rejected: list[Rejection] = []
    for record in records:
        try:
            valid.append((record, parse_event(record.value)))
        except ContractError as exc:
            rejected.append(Rejection(record, exc.reason, "ContractError", str(exc)))
        except Exception as exc:  # a bug in validation must not lose the record
            log.exception("unexpected error validating record %s", record.coordinates)
            rejected.append(
                Rejection(record, "ingest_error", type(exc).__name__, str(exc)[:2000], traceback=traceback.format_exc())
            )

    business_ids = {event.business_id for _, event in valid}
    businesses = {b.business_id: b for b in Business.objects.filter(business_id__in=business_ids, is_active=True)}
    accepted: list[tuple[Record, AIResultEvent]] = []
    for record, event in valid:
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


def dead_letter_from_rejection(rejection: Rejection) -> DeadLetter:
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
        trace_id=trace_id_from_headers(record.header("traceparent"), record.header("sentry-trace")),
    )


def inbox_row(record: Record, event: AIResultEvent) -> ProcessedMessage:
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
        trace_id=trace_id_from_headers(record.header("traceparent"), record.header("sentry-trace")),
    )


def take_in(records: list[Record]) -> IntakeResult:
    """Store one batch in a single transaction and say what became of each record."""
    result = IntakeResult()
    accepted, rejected = validate(records)
    with transaction.atomic():
        if rejected:
            DeadLetter.objects.bulk_create([dead_letter_from_rejection(r) for r in rejected], ignore_conflicts=True)
            result.dead_lettered.update(r.reason for r in rejected)
        if not accepted:
            return result

        pids = {e.processing_id for _, e in accepted}
        known_before = set(ProcessedMessage.objects.filter(processing_id__in=pids).values_list("processing_id", flat=True))
        # One INSERT ... ON CONFLICT DO NOTHING for the whole batch.
        ProcessedMessage.objects.bulk_create([inbox_row(r, e) for r, e in accepted], ignore_conflicts=True)
        stored = {
            row["processing_id"]: row
            for row in ProcessedMessage.objects.filter(processing_id__in=pids).values(
                "processing_id", "kafka_topic", "kafka_partition", "kafka_offset", "status", "saga_run"
            )
        }
        duplicates: list[DuplicateDelivery] = []
        for record, event in accepted:
            row = stored[event.processing_id]
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
            if row["status"] == ProcessedMessage.Status.RECEIVED:
                result.new.append((event.processing_id, row["saga_run"]))
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
    return result
