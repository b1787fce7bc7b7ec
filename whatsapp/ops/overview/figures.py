"""The overview's figures, read in one pass: a handful of aggregate queries, each bounded to
the last hour (or the latency window) and served by an index, plus what /metrics already
reads at scrape time (queue lengths, consumer lag, stuck rows, the outbox), taken from the
same per-process cache so an open page never adds a Kafka consumer or a Redis round trip
of its own.

Everything here is a count, a duration, a state or an id an operator already sees in the
admin: no payload, no customer text, no setting's value.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.db import connection
from django.db.models import Count, Sum
from django.db.models.functions import TruncMinute
from django.urls import reverse
from django.utils import timezone
from prometheus_client.core import Metric

from core.breakers import all_breakers
from dlq.models import DeadLetter
from whatsapp.models import AccountNotice, InboundMessage, OutboundMessage, ProcessedMessage, WebhookDelivery
from whatsapp.ops.collectors import ScrapeTimeCollector

# The chart's span, in one-minute buckets (the current, unfinished minute is the last).
MINUTES = 60
# Latency percentiles are over the messages finished in the last LATENCY_MINUTES: recent
# enough to move when the pipeline slows down, long enough to hold more than a few rows.
LATENCY_MINUTES = 15
PERCENTILES = (0.5, 0.95, 0.99)


def read(now: datetime | None = None) -> dict[str, Any]:
    """The overview as plain JSON-ready values (times as ISO strings, minutes as epoch seconds)."""
    now = now or timezone.now()
    gauges = _scrape_time_gauges()
    return {
        "generated_at": now.isoformat(),
        "account_notices": account_notices(),
        "per_minute": per_minute(now),
        "latency": latency(now),
        "in_flight": in_flight(),
        "dead_letters": open_dead_letters(),
        "breakers": open_breakers(),
        "queues": _by_label(gauges.get("celery_queue_length"), "queue"),
        "consumer_lag": consumer_lag(gauges.get("kafka_consumer_lag")),
        "stuck": stuck(now, gauges.get("inbox_stuck_messages")),
        "webhooks": webhooks(now),
        "replies_not_sent": replies_not_sent(now),
        "outbox": {
            "backlog": _single(gauges.get("whatsapp_outbox_backlog")),
            "oldest_age_seconds": _single(gauges.get("whatsapp_outbox_oldest_age_seconds")),
        },
    }


def per_minute(now: datetime) -> dict[str, Any]:
    """Messages finished per minute over the last hour: processed and failed (inbox rows by
    their finished_at, one GROUP BY on the partial index inbox_finished), and dead letters
    written (every stage, ingest's included, by created_at on dlq_created). Minutes with
    nothing are zeros, so the chart's x axis is the whole hour."""
    first = now.replace(second=0, microsecond=0) - timedelta(minutes=MINUTES - 1)
    minutes = [first + timedelta(minutes=i) for i in range(MINUTES)]
    index = {minute: i for i, minute in enumerate(minutes)}
    series: dict[str, list[int]] = {name: [0] * MINUTES for name in ("processed", "failed", "dead_lettered")}
    finished = (
        ProcessedMessage.objects.filter(
            finished_at__gte=first,
            status__in=[ProcessedMessage.Status.PROCESSED, ProcessedMessage.Status.FAILED],
        )
        .annotate(minute=TruncMinute("finished_at"))
        .values("minute", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in finished:
        name = "processed" if row["status"] == ProcessedMessage.Status.PROCESSED else "failed"
        if row["minute"] in index:
            series[name][index[row["minute"]]] += row["n"]
    dead = (
        DeadLetter.objects.filter(created_at__gte=first)
        .annotate(minute=TruncMinute("created_at"))
        .values("minute")
        .annotate(n=Count("id"))
        .order_by()
    )
    for letters in dead:
        if letters["minute"] in index:
            series["dead_lettered"][index[letters["minute"]]] += letters["n"]
    return {
        "minutes": [int(minute.timestamp()) for minute in minutes],
        **series,
        "totals": {name: sum(values) for name, values in series.items()},
    }


def latency(now: datetime) -> dict[str, Any]:
    """Percentiles, in milliseconds, of the messages processed in the last LATENCY_MINUTES,
    in one statement (Postgres's percentile_cont):

    - end_to_end: from the Kafka record's timestamp to finished_at (from received_at, when
      taken in, for a record whose timestamp no date can hold: kafka_timestamp_ms);
    - pipeline: from received_at, when ingest stored the row, to finished_at, so a slow
      ingest (end_to_end grows, pipeline does not) tells apart from slow workers.

    First runs only: a requeued message's run starts when an operator says, not when the
    record arrived, and would read as hours of latency."""
    table = ProcessedMessage._meta.db_table
    fractions = "ARRAY[" + ", ".join(str(p) for p in PERCENTILES) + "]"
    sql = f"""
        SELECT count(*),
               percentile_cont({fractions}) WITHIN GROUP (
                   ORDER BY extract(epoch FROM finished_at - coalesce(kafka_timestamp, received_at))),
               percentile_cont({fractions}) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - received_at))
        FROM {table}
        WHERE finished_at >= %s AND status = %s AND saga_run = 1
    """  # the table name and fractions are ours; the values are parameters
    with connection.cursor() as cursor:
        cursor.execute(sql, [now - timedelta(minutes=LATENCY_MINUTES), ProcessedMessage.Status.PROCESSED])
        count, end_to_end, pipeline = cursor.fetchone()

    def in_ms(values: list[float] | None) -> dict[str, float | None]:
        values = values or [None] * len(PERCENTILES)  # type: ignore[list-item]
        return {
            f"p{round(p * 100)}": (None if v is None else round(float(v) * 1000, 1))
            for p, v in zip(PERCENTILES, values, strict=True)
        }

    return {
        "minutes": LATENCY_MINUTES,
        "count": count,
        "end_to_end_ms": in_ms(end_to_end),
        "pipeline_ms": in_ms(pipeline),
    }


def in_flight() -> dict[str, int]:
    """Inbox rows taken in and not finished, by status (the index inbox_status_updated):
    WAITING ones are behind an earlier message of their conversation."""
    rows = (
        ProcessedMessage.objects.filter(status__in=ProcessedMessage.IN_FLIGHT)
        .values("status")
        .annotate(n=Count("id"))
        .order_by()
    )
    found = {row["status"]: row["n"] for row in rows}
    return {status: found.get(status, 0) for status in ProcessedMessage.IN_FLIGHT}


def open_dead_letters() -> dict[str, Any]:
    """Open dead letters by reason and stage, each with the DLQ list filtered to it."""
    changelist = reverse("admin:dlq_deadletter_changelist")
    rows = (
        DeadLetter.objects.filter(status=DeadLetter.Status.OPEN)
        .values("reason", "stage")
        .annotate(n=Count("id"))
        .order_by("-n", "reason", "stage")
    )
    groups = [
        {
            "reason": row["reason"],
            "stage": row["stage"],
            "count": row["n"],
            "url": changelist
            + "?"
            + urlencode({"status__exact": "OPEN", "reason__exact": row["reason"], "stage__exact": row["stage"]}),
        }
        for row in rows
    ]
    return {
        "total": sum(group["count"] for group in groups),
        "url": changelist + "?" + urlencode({"status__exact": "OPEN"}),
        "groups": groups,
    }


def open_breakers() -> list[dict[str, Any]]:
    """The breakers that are not closed (open, half-open or forced), from Redis."""
    changelist = reverse("admin:whatsapp_circuitbreaker_changelist")
    return [
        {
            "name": snap["name"],
            "state": snap["state"],
            "remaining_seconds": snap.get("remaining"),
            "forced": bool(snap.get("forced")),
            "url": changelist,
        }
        for snap in all_breakers()
        if snap["state"] != "closed"
    ]


def consumer_lag(family: Metric | None) -> dict[str, Any] | None:
    if family is None:
        return None
    partitions = [
        {"topic": s.labels["topic"], "partition": int(s.labels["partition"]), "lag": int(s.value)}
        for s in family.samples
    ]
    return {"total": sum(p["lag"] for p in partitions), "partitions": partitions}


def stuck(now: datetime, family: Metric | None) -> dict[str, Any]:
    """How many rows the sweeper would re-drive (the scrape-time gauge), and the oldest of
    them: the first row of inbox_status_updated for RECEIVED and PROCESSING."""
    after = settings.SWEEP_STUCK_AFTER_SECONDS
    row = (
        ProcessedMessage.objects.filter(
            status__in=[ProcessedMessage.Status.RECEIVED, ProcessedMessage.Status.PROCESSING],
            updated_at__lt=now - timedelta(seconds=after),
        )
        .order_by("updated_at")
        .values("pk", "processing_id", "status", "business_id", "updated_at")
        .first()
    )
    oldest = None
    if row is not None:
        oldest = {
            "processing_id": row["processing_id"],
            "status": row["status"],
            "business_id": row["business_id"],
            "since": row["updated_at"].isoformat(),
            "age_seconds": round((now - row["updated_at"]).total_seconds(), 1),
            "url": reverse("admin:whatsapp_processedmessage_change", args=[row["pk"]]),
        }
    count = _single(family)
    return {"count": None if count is None else int(count), "after_seconds": after, "oldest": oldest}


def webhooks(now: datetime) -> dict[str, int]:
    """What the WhatsApp webhook received in the last hour (WebhookDelivery.received_at)."""
    found = WebhookDelivery.objects.filter(received_at__gte=now - timedelta(minutes=MINUTES)).aggregate(
        deliveries=Count("id"),
        messages=Sum("messages"),
        new_messages=Sum("new_messages"),
        duplicates=Sum("duplicates"),
        unroutable=Sum("unroutable"),
        statuses=Sum("statuses"),
    )
    figures = {name: int(value or 0) for name, value in found.items()}
    figures["unreadable"] = InboundMessage.objects.filter(
        stored_at__gte=now - timedelta(minutes=MINUTES), state=InboundMessage.State.UNREADABLE
    ).count()
    return figures


# Why a reply was not sent, per skipped status (whatsapp.send.reply).
SKIPPED_WHY = {
    OutboundMessage.Status.SKIPPED_OPTED_OUT: "the customer opted out (or stopped marketing messages: 131050)",
    OutboundMessage.Status.SKIPPED_WINDOW_CLOSED: "the 24-hour window had closed and no template could go",
    OutboundMessage.Status.SKIPPED_DISABLED: "the business has replies off or no phone-number id",
}


def replies_not_sent(now: datetime) -> list[dict[str, Any]]:
    """The replies skipped in the last hour, by why, each with the admin's list filtered to it
    (served by the outbound_status_business index: status first)."""
    changelist = reverse("admin:whatsapp_outboundmessage_changelist")
    rows = (
        OutboundMessage.objects.filter(status__in=list(SKIPPED_WHY), updated_at__gte=now - timedelta(minutes=MINUTES))
        .values("status")
        .annotate(n=Count("id"))
    )
    found = {row["status"]: row["n"] for row in rows}
    return [
        {
            "status": status,
            "why": why,
            "count": found.get(status, 0),
            "url": changelist + "?" + urlencode({"status__exact": status}),
        }
        for status, why in SKIPPED_WHY.items()
    ]


# The notices shown; the admin lists the rest.
NOTICES = 10


def account_notices() -> list[dict[str, Any]]:
    """What Meta said of the accounts and numbers that nobody acknowledged yet, most serious
    first: a restricted account or a lowered messaging limit comes before everything else."""
    notices = AccountNotice.objects.open().select_related("business").serious_first()[:NOTICES]
    return [
        {**notice.as_overview(), "url": reverse("admin:whatsapp_accountnotice_change", args=[notice.pk])}
        for notice in notices
    ]


def _scrape_time_gauges() -> dict[str, Metric]:
    """/metrics' scrape-time gauges by name, from ScrapeTimeCollector's cache
    (METRICS_CACHE_SECONDS); a source that did not answer is absent."""
    return {family.name: family for family in ScrapeTimeCollector().collect()}


def _by_label(family: Metric | None, label: str) -> dict[str, int] | None:
    if family is None:
        return None
    return {s.labels[label]: int(s.value) for s in family.samples}


def _single(family: Metric | None) -> float | None:
    if family is None or not family.samples:
        return None
    return family.samples[0].value
