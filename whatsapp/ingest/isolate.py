"""No record stops ingest: a batch that fails for a reason other than an outage is split in
halves until the record at fault is alone, and that record is dead-lettered as
`unprocessable` (its raw bytes, key and headers kept, the error class recorded) while the
rest of the batch is taken in as usual.

take_in_and_hand_off is what ingest and replay call. It tells an outage (the database or the
broker unreachable: core.errors.is_outage), which it raises for the caller to pause and
retry, from any other error, which some record of the batch must have caused.
"""

from __future__ import annotations

import logging

from django.db import transaction

from core.errors import is_outage
from core.metrics import counters
from core.tracing import RecordTrace
from dlq.models import DeadLetter
from whatsapp.contracts.result import parse_event
from whatsapp.ingest.intake import IntakeResult, dead_lettered_before, take_in
from whatsapp.ingest.validate import UNPROCESSABLE, WITHHELD, ContractOutcomes, class_name, frames, storable_text
from whatsapp.kafka import Record
from whatsapp.models import ProcessedMessage
from whatsapp.pipeline.hand_off import hand_off

log = logging.getLogger(__name__)

# Where a record that cannot be taken in failed: storing its batch, or handing it to Celery.
STORE = "store"
HAND_OFF = "hand-off"


def take_in_and_hand_off(
    records: list[Record], *, source: str = "kafka", outcomes: ContractOutcomes | None = None
) -> IntakeResult:
    """Take in a batch and hand its new rows to the pipeline. Raises only on an outage.

    Any other error isolates the record(s) causing it: the batch is split in halves, each
    taken in on its own, down to the single record, which is dead-lettered as unprocessable.
    A batch without such a record costs nothing more than before; one bad record among n
    costs about 2·log2(n) more attempts, each a transaction and its queries: the contract
    (the CPU-bound part) is checked once per record, its outcomes kept for the halves."""
    outcomes = {} if outcomes is None else outcomes
    try:
        result = take_in(records, source=source, outcomes=outcomes)
    except Exception as exc:
        if is_outage(exc):
            raise
        return _isolate(records, exc, source=source, stage=STORE, outcomes=outcomes)
    try:
        hand_off(result.new, result.traces, result.rows)
    except Exception as exc:
        result.finish_traces("unavailable")
        if is_outage(exc):
            raise
        # The rows are stored; taking the halves in again finds them (re-read) and hands them off.
        return _isolate(records, exc, source=source, stage=HAND_OFF, outcomes=outcomes)
    return result


def _isolate(
    records: list[Record], exc: BaseException, *, source: str, stage: str, outcomes: ContractOutcomes
) -> IntakeResult:
    if len(records) == 1:
        return dead_letter_unprocessable(records[0], exc, stage=stage)
    middle = len(records) // 2
    result = IntakeResult()
    for half in (records[:middle], records[middle:]):
        part = take_in_and_hand_off(half, source=source, outcomes=outcomes)
        result.merge(part)
        result.new.extend(part.new)
    return result


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
        error_class=storable_text(class_name(exc)),
        error_message=f"the record passed the contract but could not be {what}: {class_name(exc)} {WITHHELD}",
        traceback=frames(exc),
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
        fresh = not dead_lettered_before([record])
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
            class_name(exc),
            UNPROCESSABLE,
        )
    trace.finish("internal_error")
    result = IntakeResult()
    result.dead_lettered[UNPROCESSABLE] += 1
    result.unprocessable.append(record.coordinates)
    return result
