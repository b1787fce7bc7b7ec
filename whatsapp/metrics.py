"""Prometheus metrics: what they are, where they are counted, and how they are served.

Two kinds:

- **Counted where it happens** (counters and histograms), by ingest and the
  Celery workers. A count that mirrors a database change (a new inbox row, a
  dead letter, a saga step that succeeded) is made in `transaction.on_commit`,
  so it happens once per committed change, never per task attempt: a task
  Celery delivers twice, or a transaction rolled back, counts nothing extra,
  and the counters equal the database's counts.
- **Read at scrape time** (gauges) by the web process's `/metrics`: queue
  lengths (Redis LLEN, summed over kombu's priority lists), stuck inbox rows
  and open dead letters (Postgres), breaker states (Redis), consumer lag (the
  group's committed offsets against the high watermarks, from Kafka). Reading
  the truth when scraped is simpler than keeping gauges in step from many
  processes, and it stays right when every worker is down. What was read is
  kept for METRICS_CACHE_SECONDS per process, so scrapes (however many, however
  close together) cost Postgres, Redis and Kafka one read per window.

/metrics is served to a scraper with METRICS_TOKEN or a staff user only
(config/health.py).

Multiprocess mode: with PROMETHEUS_MULTIPROC_DIR set in the environment of
every process before it starts (prometheus_client reads it on import), each
process writes its counts to files there and the web process adds them all up
(MultiProcessCollector); a dead Celery child's counts stay counted. Without it
each process keeps its own registry and `/metrics` shows only the web
process's own counts plus the scrape-time gauges: fine for a look, wrong for
the dashboard. Ingest also serves its own counts on INGEST_METRICS_ADDR:INGEST_METRICS_PORT.

Labels are bounded by the business (business, intent, action, service,
reason, stage, queue, partition), never a lead, message or customer.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric

log = logging.getLogger(__name__)

# The *_created series say nothing a dashboard needs and double the output.
disable_created_metrics()

MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def process_identifier() -> str:
    """Names this process's files in the multiprocess directory. The host name
    goes in with the pid so that containers sharing one directory (a volume, as
    in docker-compose.yml), each with its own pid 1, never write the same file."""
    return f"{socket.gethostname().replace('_', '-')}-{os.getpid()}"


if MULTIPROCESS_DIR:
    # Before any metric exists: each takes its storage from ValueClass when created.
    values.ValueClass = values.MultiProcessValue(process_identifier)

# --- counted where it happens --------------------------------------------------------------
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PIPELINE_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
CONFIDENCE = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0)

MESSAGES_RECEIVED = Counter(
    "whatsapp_messages_received", "Inbox rows created (valid, first-seen messages), by business and source.",
    ["business_id", "source"])
MESSAGES_INVALID = Counter(
    "whatsapp_messages_invalid", "Records rejected at ingest and dead-lettered, by reason.", ["reason"])
DUPLICATES = Counter("message_duplicate", "Records whose processing_id had already been taken in.")
DEAD_LETTERS = Counter("message_dlq", "Dead letters written, by stage and reason.", ["stage", "reason"])
INTENT_DETECTED = Counter("ai_intent_detected", "Messages planned, by the intent the AI gave them.", ["intent"])
INTENT_CONFIDENCE = Histogram(
    "ai_intent_confidence", "The AI's confidence in the intent of each planned message.", ["intent"],
    buckets=CONFIDENCE)
AI_PROCESSING = Histogram(
    "ai_processing_duration_seconds", "The upstream AI's processing time (the event's ai.processing_ms).",
    ["intent"], buckets=SECONDS)
PIPELINE_DURATION = Histogram(
    "pipeline_duration_seconds", "From the Kafka record's timestamp to the message being processed.",
    ["intent"], buckets=PIPELINE_SECONDS)
STAGE_DURATION = Histogram(
    "pipeline_stage_duration_seconds",
    "Time spent in each stage: an ingest batch, or one run of a pipeline task.", ["stage"], buckets=SECONDS)
ACTIONS = Counter(
    "whatsapp_action_executed",
    "Actions that reached an outcome: a saga step succeeded or failed for good, a reply sent, skipped or failed.",
    ["action", "status"])
COMPENSATIONS = Counter(
    "action_compensation", "Succeeded actions undone (compensated) or that could not be undone.",
    ["action", "status"])
LEAD_STATES = Counter("lead_state_changed", "Lead state machine moves.", ["from", "to"])
BREAKER_TRANSITIONS = Counter(
    "circuit_breaker_transitions", "Circuit breaker state changes, by breaker and new state.", ["circuit", "to"])
INGEST_BATCHES = Counter("kafka_ingest_batches", "Batches of Kafka records taken in (stored and handed off).")

# --- read at scrape time by the web process ---------------------------------------------------
SCRAPE_TIME: dict[str, str] = {
    "circuit_breaker_state": "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
    "kafka_consumer_lag": "Records on the result topic not yet committed by the ingest consumer group.",
    "celery_queue_length": "Tasks waiting in each Celery queue (all priority lists of the queue).",
    "inbox_stuck_messages": "Inbox rows in RECEIVED or PROCESSING untouched for SWEEP_STUCK_AFTER_SECONDS.",
    "dlq_open_entries": "Open dead letters, by reason.",
}
BREAKER_STATE_VALUE = {"closed": 0, "half-open": 1, "open": 2}
# The reply to the customer, counted among the actions: whatsapp_action_executed_total{action="REPLY"}.
REPLY = "REPLY"

# Every metric family this module defines, for the dashboard and alert checks.
COUNTED = (MESSAGES_RECEIVED, MESSAGES_INVALID, DUPLICATES, DEAD_LETTERS, INTENT_DETECTED, INTENT_CONFIDENCE,
           AI_PROCESSING, PIPELINE_DURATION, STAGE_DURATION, ACTIONS, COMPENSATIONS, LEAD_STATES,
           BREAKER_TRANSITIONS, INGEST_BATCHES)


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
    from django.db import transaction

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
    from django.utils import timezone

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


def observe_stage(stage: str, seconds: float) -> None:
    STAGE_DURATION.labels(stage).observe(seconds)


def ingest_batch(seconds: float) -> None:
    INGEST_BATCHES.inc()
    observe_stage("ingest", seconds)


def _breaker_changed(change: Any) -> None:
    BREAKER_TRANSITIONS.labels(change.name, change.new).inc()


def _listen_to_breakers() -> None:
    from whatsapp.breakers import add_listener

    add_listener(_breaker_changed)


_listen_to_breakers()


def mark_process_dead(pid: int) -> None:
    """A process of this host's multiprocess group ended (a Celery child, ingest, a
    gunicorn worker): drop its live gauges."""
    if MULTIPROCESS_DIR:
        multiprocess.mark_process_dead(f"{socket.gethostname().replace('_', '-')}-{pid}", MULTIPROCESS_DIR)


# --- scrape time ---------------------------------------------------------------------------------
class ScrapeTimeCollector:
    """The gauges read when /metrics is scraped. A source that does not answer is left out
    (and logged), so one dead dependency never empties the whole scrape.

    What was read is kept for METRICS_CACHE_SECONDS in this process: a scrape
    within the window, or one that arrives while another is reading, gets the same
    gauges without a query, a Redis call or a Kafka consumer of its own. A source
    that failed stays left out for the window too, so a dead broker is not waited
    for on every scrape. prometheus_client has no such cache, hence this one."""

    _lock = threading.Lock()
    _read_at: float | None = None
    _families: list[Metric] = []

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        from django.conf import settings

        keep = settings.METRICS_CACHE_SECONDS
        cls = type(self)
        with cls._lock:  # one reader at a time; the others wait and take what it read
            now = time.monotonic()
            if cls._read_at is None or now - cls._read_at >= keep:
                cls._families = list(self.read())
                cls._read_at = time.monotonic()
            return list(cls._families)

    @classmethod
    def forget(cls) -> None:
        """Drop what was read, so the next scrape reads again (tests, and after a settings change)."""
        with cls._lock:
            cls._read_at, cls._families = None, []

    def read(self) -> Iterable[Metric]:
        for name, read in (("circuit_breaker_state", self.breaker_states),
                           ("celery_queue_length", self.queue_lengths),
                           ("inbox_stuck_messages", self.stuck_messages),
                           ("dlq_open_entries", self.open_dead_letters),
                           ("kafka_consumer_lag", self.consumer_lag)):
            try:
                yield read()
            except Exception as exc:
                log.warning("metrics: cannot read %s (%s: %s)", name, type(exc).__name__, str(exc)[:200])

    @staticmethod
    def breaker_states() -> Metric:
        from whatsapp.breakers import all_breakers

        family = GaugeMetricFamily("circuit_breaker_state", SCRAPE_TIME["circuit_breaker_state"], labels=["circuit"])
        for snapshot in all_breakers():
            family.add_metric([snapshot["name"]], BREAKER_STATE_VALUE.get(snapshot["state"], 0))
        return family

    @staticmethod
    def queue_lengths() -> Metric:
        import redis
        from django.conf import settings
        from kombu.transport.redis import PRIORITY_STEPS, Channel

        family = GaugeMetricFamily("celery_queue_length", SCRAPE_TIME["celery_queue_length"], labels=["queue"])
        queues = celery_queues()
        prefix = (getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None) or {}).get("global_keyprefix", "")
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2, socket_connect_timeout=2)
        try:
            with client.pipeline(transaction=False) as pipe:
                for queue in queues:
                    for priority in PRIORITY_STEPS:  # kombu keeps one list per priority step
                        pipe.llen(prefix + (f"{queue}{Channel.sep}{priority}" if priority else queue))
                lengths = pipe.execute()
        finally:
            client.close()
        steps = len(PRIORITY_STEPS)
        for index, queue in enumerate(queues):
            family.add_metric([queue], sum(lengths[index * steps:(index + 1) * steps]))
        return family

    @staticmethod
    def stuck_messages() -> Metric:
        from datetime import timedelta

        from django.conf import settings
        from django.utils import timezone

        from whatsapp.models import ProcessedMessage

        cutoff = timezone.now() - timedelta(seconds=settings.SWEEP_STUCK_AFTER_SECONDS)
        stuck = ProcessedMessage.objects.filter(
            status__in=[ProcessedMessage.Status.RECEIVED, ProcessedMessage.Status.PROCESSING], updated_at__lt=cutoff,
        ).count()
        return GaugeMetricFamily("inbox_stuck_messages", SCRAPE_TIME["inbox_stuck_messages"], value=stuck)

    @staticmethod
    def open_dead_letters() -> Metric:
        from django.db.models import Count

        from dlq.models import DeadLetter

        family = GaugeMetricFamily("dlq_open_entries", SCRAPE_TIME["dlq_open_entries"], labels=["reason"])
        rows = (DeadLetter.objects.filter(status=DeadLetter.Status.OPEN).values("reason")
                .annotate(n=Count("id")).order_by("reason"))
        for row in rows:
            family.add_metric([row["reason"]], row["n"])
        return family

    @staticmethod
    def consumer_lag() -> Metric:
        """Per partition: the high watermark minus the group's committed offset (the low
        watermark when it has committed nothing yet), as kafka-consumer-groups shows it."""
        from confluent_kafka import Consumer, TopicPartition
        from django.conf import settings

        from whatsapp.kafka import consumer_config

        topic = settings.KAFKA_RESULT_TOPIC
        family = GaugeMetricFamily("kafka_consumer_lag", SCRAPE_TIME["kafka_consumer_lag"], labels=["topic", "partition"])
        consumer = Consumer(consumer_config(settings.KAFKA_GROUP_ID, **{"socket.timeout.ms": 2000}))
        try:
            metadata = consumer.list_topics(topic, timeout=2)
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                raise LookupError(f"topic {topic} not found")
            partitions = [TopicPartition(topic, p) for p in sorted(found.partitions)]
            committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=2)}
            for tp in partitions:
                low, high = consumer.get_watermark_offsets(tp, timeout=2)
                offset = committed.get(tp.partition, -1)
                family.add_metric([topic, str(tp.partition)], max(0, high - (offset if offset >= 0 else low)))
        finally:
            consumer.close()
        return family


def celery_queues() -> list[str]:
    """The queues the pipeline uses: the default one, the executors' own, and the replies'."""
    from django.conf import settings

    from whatsapp.actions.registry import executors

    return sorted({settings.CELERY_TASK_DEFAULT_QUEUE, "whatsapp", *(e.queue for e in executors)})


class _ThisProcess:
    """This process's own metrics, for when there is no multiprocess directory."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def exposition() -> tuple[bytes, str]:
    """The /metrics body: every process's counts (or this one's) and the scrape-time gauges.
    A registry per scrape, as prometheus_client advises for multiprocess mode."""
    registry = CollectorRegistry(auto_describe=False)
    if MULTIPROCESS_DIR:
        multiprocess.MultiProcessCollector(registry, path=MULTIPROCESS_DIR)
    else:
        registry.register(_ThisProcess())
    registry.register(ScrapeTimeCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST


def serve_ingest(port: int, addr: str = "127.0.0.1") -> Any | None:
    """Serve this process's own counts on addr:port (ingest, scraped alone). Port 0: not served.
    Not being able to bind is logged, not fatal: taking messages in matters more.
    Only counters are there (no scrape-time reads), and no token is asked for:
    INGEST_METRICS_ADDR keeps the port on this machine or a private network."""
    if not port:
        return None
    from prometheus_client import start_http_server

    try:
        server, _thread = start_http_server(port, addr=addr, registry=REGISTRY)
    except OSError as exc:
        log.error("metrics: cannot serve ingest metrics on %s:%s (%s); carrying on without", addr, port, exc)
        return None
    log.info("metrics: ingest metrics on http://%s:%s/metrics", addr, port)
    return server
