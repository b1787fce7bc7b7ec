"""Checking a batch of Kafka records against the result contract and the known businesses.

A record the contract refuses, or one naming no active business (or the wrong tenant), is a
Rejection: intake stores it as a dead letter in the batch's transaction.

A result answers a request: when its processing_id names a message our webhook stored, it
must name that message's business and customer (anyone who can write to the result topic
could otherwise act on another tenant's customer), and the message's own time, not the
record's, is the customer's; a mismatch is `request_mismatch`. A result for a message we
never stored (the AI service's own intake) is taken only for a business that accepts direct
results. A `received_at` more than FUTURE_TOLERANCE ahead is refused: it would keep the
lead's 24-hour window open for good. Errors are kept
without the record's own text (WITHHELD), since an error message may quote customer data.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from core.tracing import RecordTrace
from dlq.models import DeadLetter
from leads.models import Business
from whatsapp.contracts.result import AIResultEvent, ContractError, parse_event, to_payload
from whatsapp.kafka import Record
from whatsapp.models import InboundMessage

UNPROCESSABLE = "unprocessable"
REQUEST_MISMATCH = "request_mismatch"
FUTURE_TOLERANCE = timedelta(minutes=5)
PROCESSING_ID_CONFLICT = "processing_id_conflict"


@dataclass
class Rejection:
    record: Record
    reason: str
    error_class: str
    message: str
    event: AIResultEvent | None = None
    traceback: str = ""


# What the contract made of one record: its event, or the rejection it earns. It depends on
# the record's bytes alone, so a batch split in halves (whatsapp.ingest.isolate) keeps it,
# by the record object's id, and parses each record once however deep the split goes.
ContractOutcomes = dict[int, AIResultEvent | Rejection]


def validate(
    records: list[Record],
    traces: dict[tuple[str, int, int], RecordTrace] | None = None,
    *,
    outcomes: ContractOutcomes | None = None,
) -> tuple[list[tuple[Record, AIResultEvent]], list[Rejection]]:
    """Check each record against the contract and the known businesses.

    With `outcomes`, a record's contract outcome found there is reused and a new one is
    kept there; the business checks below read the database, so they run every time."""
    traces = traces if traces is not None else {r.coordinates: RecordTrace(r) for r in records}
    valid: list[tuple[Record, AIResultEvent]] = []
    rejected: list[Rejection] = []
    for record in records:
        trace = traces[record.coordinates]
        outcome = outcomes.get(id(record)) if outcomes is not None else None
        if outcome is None:
            outcome = _contract_outcome(record, trace)
            if outcomes is not None:
                outcomes[id(record)] = outcome
        if isinstance(outcome, Rejection):
            rejected.append(outcome)
            continue
        event = outcome
        if outcomes is not None:
            # The kept event stays as parsed: below, an accepted one gets the webhook's
            # received_at, so each call works on its own copy of message (the one field set).
            event = outcome.model_copy(update={"message": outcome.message.model_copy()})
        trace.about(processing_id=event.processing_id, intent=event.intent.value, lead_id=event.lead_id)
        valid.append((record, event))

    # Tenant resolution is one query for the batch: each record's span covers it and its own check.
    spans = {
        record.coordinates: traces[record.coordinates].child("whatsapp.tenant", "resolve the business and tenant")
        for record, _ in valid
    }
    business_ids = {event.business_id for _, event in valid}
    businesses = {b.business_id: b for b in Business.objects.filter(business_id__in=business_ids, is_active=True)}
    stored = _stored_requests([event.processing_id for _, event in valid])
    latest = timezone.now() + FUTURE_TOLERANCE
    accepted: list[tuple[Record, AIResultEvent]] = []
    for record, event in valid:
        spans[record.coordinates].finish()
        business = businesses.get(event.business_id)
        request = stored.get(event.processing_id)
        if event.message.received_at > latest:
            rejected.append(
                Rejection(
                    record,
                    "invalid_payload",
                    "ContractError",
                    "message.received_at: more than 5 minutes in the future",
                    event,
                )
            )
        elif business is None:
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
        elif (problem := _mismatch(event, business, request)) is not None:
            rejected.append(Rejection(record, REQUEST_MISMATCH, "ContractError", problem, event))
        else:
            if request is not None and request.received_at is not None:
                event.message.received_at = request.received_at  # the webhook's time is the customer's
            accepted.append((record, event))
    return accepted, rejected


def _contract_outcome(record: Record, trace: RecordTrace) -> AIResultEvent | Rejection:
    """The record's parsed event, or why the contract refuses it."""
    try:
        with trace.child("whatsapp.validate", "validate the event against the contract"):
            return parse_event(record.value)
    except ContractError as exc:
        return Rejection(record, exc.reason, "ContractError", str(exc))
    except Exception as exc:  # a bug in validation must not lose the record (logged at ERROR when stored)
        return Rejection(
            record,
            UNPROCESSABLE,
            class_name(exc),
            f"validation failed unexpectedly: {class_name(exc)} {WITHHELD}",
            traceback=frames(exc),
        )


def _stored_requests(processing_ids: list[str]) -> dict[str, InboundMessage]:
    """The webhook's messages the batch's results answer, in one query."""
    if not processing_ids:
        return {}
    rows = InboundMessage.objects.filter(processing_id__in=processing_ids).only(
        "processing_id", "business_id", "wa_id", "user_id", "received_at"
    )
    return {row.processing_id: row for row in rows if row.processing_id}


def _mismatch(event: AIResultEvent, business: Business, request: InboundMessage | None) -> str | None:
    """Why a result does not answer its request; None when it does. Names ids, never customer data."""
    if request is None:
        if business.accepts_direct_results:
            return None
        return (
            f"processing_id: no message the webhook stored has it, and business {business.business_id!r} "
            "accepts results only for those"
        )
    if request.business_id != business.pk:
        return (
            "business_id: the message with this processing_id was routed to another business, "
            f"not {business.business_id!r}"
        )
    customer = event.customer
    same = (customer.user_id and customer.user_id == request.user_id) or (
        customer.wa_id and customer.wa_id == request.wa_id
    )
    if not same:
        return "customer: not the customer who sent the message with this processing_id"
    return None


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


# An error's own text may quote the record (Postgres quotes the JSON around a bad token), so
# dead letters and log lines keep its class and where it was raised, never its message.
WITHHELD = "(its message is not kept: it may quote the record)"


def storable_text(text: str) -> str:
    """Text Postgres takes: no NUL, no lone surrogate."""
    text = text.replace("\x00", "\\x00")
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def class_name(exc: BaseException) -> str:
    return type(exc).__name__


def frames(exc: BaseException) -> str:
    """Where the error was raised (code lines only; see WITHHELD), for the dead letter."""
    return "".join(traceback.format_tb(exc.__traceback__)) + f"{class_name(exc)} {WITHHELD}\n"
