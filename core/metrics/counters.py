"""The metric families the service counts where things happen, and the functions that
count them. A count that mirrors a database change is made in transaction.on_commit,
so it happens once per committed change (see core.metrics). The scrape-time gauges'
names are here too (SCRAPE_TIME): the apps' collectors read them, the dashboards
query them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone
from prometheus_client import Counter, Histogram, disable_created_metrics

from core.metrics import process  # noqa: F401  (multiprocess storage, before any metric is made)

# The *_created series say nothing a dashboard needs and double the output.
disable_created_metrics()

# --- counted where it happens --------------------------------------------------------------
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PIPELINE_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
CONFIDENCE = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0)

MESSAGES_RECEIVED = Counter(
    "whatsapp_messages_received",
    "Inbox rows created (valid, first-seen messages), by business and source.",
    ["business_id", "source"],
)
MESSAGES_INVALID = Counter(
    "whatsapp_messages_invalid", "Records rejected at ingest and dead-lettered, by reason.", ["reason"]
)
DUPLICATES = Counter("message_duplicate", "Records whose processing_id had already been taken in.")
DEAD_LETTERS = Counter("message_dlq", "Dead letters written, by stage and reason.", ["stage", "reason"])
INTENT_DETECTED = Counter("ai_intent_detected", "Messages planned, by the intent the AI gave them.", ["intent"])
INTENT_CONFIDENCE = Histogram(
    "ai_intent_confidence", "The AI's confidence in the intent of each planned message.", ["intent"], buckets=CONFIDENCE
)
AI_PROCESSING = Histogram(
    "ai_processing_duration_seconds",
    "The upstream AI's processing time (the event's ai.processing_ms).",
    ["intent"],
    buckets=SECONDS,
)
PIPELINE_DURATION = Histogram(
    "pipeline_duration_seconds",
    "From the Kafka record's timestamp to the message being processed.",
    ["intent"],
    buckets=PIPELINE_SECONDS,
)
STAGE_DURATION = Histogram(
    "pipeline_stage_duration_seconds",
    "Time spent in each stage: an ingest batch, or one run of a pipeline task.",
    ["stage"],
    buckets=SECONDS,
)
ACTIONS = Counter(
    "whatsapp_action_executed",
    "Actions that reached an outcome: a saga step succeeded or failed for good, a reply sent, skipped or failed.",
    ["action", "status"],
)
COMPENSATIONS = Counter(
    "action_compensation", "Succeeded actions undone (compensated) or that could not be undone.", ["action", "status"]
)
LEAD_STATES = Counter("lead_state_changed", "Lead state machine moves.", ["from", "to"])
BREAKER_TRANSITIONS = Counter(
    "circuit_breaker_transitions", "Circuit breaker state changes, by breaker and new state.", ["circuit", "to"]
)
INGEST_BATCHES = Counter("kafka_ingest_batches", "Batches of Kafka records taken in (stored and handed off).")
DELIVERY_STATUSES = Counter(
    "whatsapp_delivery_status",
    "Delivery statuses Meta reported for our messages, by status and what applying them did "
    "(applied, stale: a status of higher meaning was there; unknown: no message of ours; "
    "ignored: a status not ranked; invalid: not a status object).",
    ["status", "outcome"],
)
MARK_READ = Counter(
    "whatsapp_mark_read",
    "Customer messages marked read through the Cloud API, by outcome (sent, given_up).",
    ["outcome"],
)
WEBHOOK_RECEIVED = Counter(
    "whatsapp_webhook_received",
    "What Meta's webhook brought, by kind: per item (message, duplicate, unroutable, unreadable, system, "
    "too_old, status) or per request (delivery stored; replay of a delivery stored before; "
    "refused_signature, refused_token, malformed, oversized, unavailable).",
    ["kind"],
)
WEBHOOK_CHANGES = Counter(
    "whatsapp_webhook_changes",
    "Changes of signed deliveries, by webhook field (the fields Meta documents; other for the rest) and "
    "state (applied; stored: a field the product does not use; unreadable).",
    ["field", "state"],
)
OUTBOX_PUBLISHED = Counter(
    "whatsapp_outbox_published", "Request events the broker acknowledged on the request topic (outbox relay)."
)
OUTBOX_ERRORS = Counter(
    "whatsapp_outbox_errors",
    "Outbox rows not published: broker (not acknowledged, retried), rejected (not a valid request, kept).",
    ["reason"],
)

PACER_WAITS = Counter(
    "whatsapp_pacer_waits",
    "Cloud API sends the pacer delayed, by sending number (phone_number_id) and the limit that made "
    "them wait (number: WHATSAPP_NUMBER_MPS; pair: one customer's WHATSAPP_PAIR_INTERVAL_SECONDS).",
    ["phone_number_id", "limit"],
)
PACER_WAIT_SECONDS = Histogram(
    "whatsapp_pacer_wait_seconds",
    "How long the pacer told a Cloud API send to wait, by sending number (phone_number_id).",
    ["phone_number_id"],
    buckets=SECONDS,
)
PACER_THROTTLED = Counter(
    "whatsapp_pacer_throttled",
    "Throttling answers the Cloud API still gave (130429: limit number, 131056: limit pair), each of "
    "which slowed that number or pair down, by sending number.",
    ["phone_number_id", "limit"],
)

# --- read at scrape time by the web process ---------------------------------------------------
SCRAPE_TIME: dict[str, str] = {
    "circuit_breaker_state": "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
    "kafka_consumer_lag": "Records on the result topic not yet committed by the ingest consumer group.",
    "celery_queue_length": "Tasks waiting in each Celery queue (all priority lists of the queue).",
    "inbox_stuck_messages": "Inbox rows in RECEIVED or PROCESSING untouched for SWEEP_STUCK_AFTER_SECONDS.",
    "dlq_open_entries": "Open dead letters, by reason.",
    "whatsapp_outbox_backlog": "Inbound messages stored but not yet published on the request topic.",
    "whatsapp_outbox_oldest_age_seconds": "Age of the oldest inbound message not yet published (0 when none).",
}
BREAKER_STATE_VALUE = {"closed": 0, "half-open": 1, "open": 2}
# The reply to the customer, counted among the actions: whatsapp_action_executed_total{action="REPLY"}.
REPLY = "REPLY"

# Every metric family this module defines, for the dashboard and alert checks.
COUNTED = (
    MESSAGES_RECEIVED,
    MESSAGES_INVALID,
    DUPLICATES,
    DEAD_LETTERS,
    INTENT_DETECTED,
    INTENT_CONFIDENCE,
    AI_PROCESSING,
    PIPELINE_DURATION,
    STAGE_DURATION,
    ACTIONS,
    COMPENSATIONS,
    LEAD_STATES,
    BREAKER_TRANSITIONS,
    INGEST_BATCHES,
    DELIVERY_STATUSES,
    MARK_READ,
    WEBHOOK_RECEIVED,
    OUTBOX_PUBLISHED,
    OUTBOX_ERRORS,
    PACER_WAITS,
    PACER_WAIT_SECONDS,
    PACER_THROTTLED,
)


def sample_names() -> set[str]:
    """The series names a query may use: name_total, name_bucket/_sum/_count, and the scrape-time gauges."""
    names = set(SCRAPE_TIME)
    for metric in COUNTED:
        for family in metric.describe():
            if family.type == "counter":
                names.add(f"{family.name}_total")
            elif family.type == "histogram":
                names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
            else:
                names.add(family.name)
    return names


# --- counting ------------------------------------------------------------------------------------
def on_commit(count: Callable[[], None]) -> None:
    """Count once the current transaction commits (at once outside one). Never raises into the caller."""
    transaction.on_commit(count, robust=True)


def received(by_business: dict[str, int], *, source: str) -> None:
    def count() -> None:
        for business_id, n in by_business.items():
            MESSAGES_RECEIVED.labels(business_id, source).inc(n)

    if by_business:
        on_commit(count)


def rejected(by_reason: dict[str, int]) -> None:
    """Records dead-lettered at ingest: invalid, and a dead letter at stage ingest."""

    def count() -> None:
        for reason, n in by_reason.items():
            MESSAGES_INVALID.labels(reason).inc(n)
            DEAD_LETTERS.labels("ingest", reason).inc(n)

    if by_reason:
        on_commit(count)


def duplicates(n: int) -> None:
    if n:
        on_commit(lambda: DUPLICATES.inc(n))


def dead_lettered(stage: str, reason: str) -> None:
    on_commit(lambda: DEAD_LETTERS.labels(stage, reason).inc())


def planned(intent: str, confidence: float, processing_ms: int | None) -> None:
    def count() -> None:
        INTENT_DETECTED.labels(intent).inc()
        INTENT_CONFIDENCE.labels(intent).observe(confidence)
        if processing_ms is not None:
            AI_PROCESSING.labels(intent).observe(processing_ms / 1000)

    on_commit(count)


def processed(intent: str, since: datetime | None) -> None:
    """The message finished: observe its time from the Kafka record (or its arrival) to now."""

    def count() -> None:
        if since is not None:
            PIPELINE_DURATION.labels(intent).observe(max(0.0, (timezone.now() - since).total_seconds()))

    on_commit(count)


def action(name: str, status: str) -> None:
    on_commit(lambda: ACTIONS.labels(name, status).inc())


def compensation(name: str, status: str) -> None:
    on_commit(lambda: COMPENSATIONS.labels(name, status).inc())


def lead_state_changed(from_state: str, to_state: str) -> None:
    on_commit(lambda: LEAD_STATES.labels(from_state, to_state).inc())


def delivery_status(status: str, outcome: str) -> None:
    on_commit(lambda: DELIVERY_STATUSES.labels(status, outcome).inc())


def mark_read(outcome: str) -> None:
    MARK_READ.labels(outcome).inc()


def paced(phone_number_id: str, limit: str, seconds: float) -> None:
    """A send told to wait: labelled by the business's number, never the customer's."""
    PACER_WAITS.labels(phone_number_id, limit).inc()
    PACER_WAIT_SECONDS.labels(phone_number_id).observe(seconds)


def pace_throttled(phone_number_id: str, limit: str) -> None:
    PACER_THROTTLED.labels(phone_number_id, limit).inc()


def observe_stage(stage: str, seconds: float) -> None:
    STAGE_DURATION.labels(stage).observe(seconds)


def ingest_batch(seconds: float) -> None:
    INGEST_BATCHES.inc()
    observe_stage("ingest", seconds)


def webhook_received(by_kind: dict[str, int]) -> None:
    """Counted once the delivery is committed."""

    def count() -> None:
        for kind, n in by_kind.items():
            if n:
                WEBHOOK_RECEIVED.labels(kind).inc(n)

    if any(by_kind.values()):
        on_commit(count)


def webhook_changes(by_field_state: dict[tuple[str, str], int]) -> None:
    """Counted once the delivery is committed; `field` is already one of the known names."""

    def count() -> None:
        for (name, state), n in by_field_state.items():
            WEBHOOK_CHANGES.labels(name, state).inc(n)

    if by_field_state:
        on_commit(count)


def webhook_refused(kind: str) -> None:
    """A request refused before anything was stored: counted at once, without touching the
    database (which may be what is down)."""
    WEBHOOK_RECEIVED.labels(kind).inc()


def outbox_published(n: int) -> None:
    if n:
        on_commit(lambda: OUTBOX_PUBLISHED.inc(n))


def outbox_errors(reason: str, n: int) -> None:
    if n:
        on_commit(lambda: OUTBOX_ERRORS.labels(reason).inc(n))


def breaker_changed(change: Any) -> None:
    """A breaker listener (core.breakers.add_listener): the whatsapp app adds it when it starts."""
    BREAKER_TRANSITIONS.labels(change.name, change.new).inc()
