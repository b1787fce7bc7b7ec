"""The gauges /metrics reads at scrape time from the pipeline's own stores: queue
lengths (Redis LLEN, summed over kombu's priority lists), stuck inbox rows and open
dead letters (Postgres), breaker states (Redis), consumer lag (Kafka). Named in
settings.METRICS_COLLECTORS, so core.metrics.serving serves them without importing them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import timedelta

import redis
from confluent_kafka import Consumer, TopicPartition
from django.conf import settings
from django.db.models import Count, Min
from django.utils import timezone
from kombu.transport.redis import PRIORITY_STEPS, Channel
from prometheus_client.core import GaugeMetricFamily, Metric

from core.breakers import all_breakers
from core.metrics.counters import BREAKER_STATE_VALUE, SCRAPE_TIME
from dlq.models import DeadLetter
from whatsapp.actions.registry import executors
from whatsapp.kafka import consumer_config
from whatsapp.models import InboundMessage, ProcessedMessage

log = logging.getLogger(__name__)


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
        for name, read in (
            ("circuit_breaker_state", self.breaker_states),
            ("celery_queue_length", self.queue_lengths),
            ("inbox_stuck_messages", self.stuck_messages),
            ("dlq_open_entries", self.open_dead_letters),
            ("kafka_consumer_lag", self.consumer_lag),
            ("whatsapp_outbox", self.outbox),
        ):
            try:
                read_out: Metric | list[Metric] = read()
                yield from (read_out if isinstance(read_out, list) else [read_out])
            except Exception as exc:
                log.warning("metrics: cannot read %s (%s: %s)", name, type(exc).__name__, str(exc)[:200])

    @staticmethod
    def breaker_states() -> Metric:
        family = GaugeMetricFamily("circuit_breaker_state", SCRAPE_TIME["circuit_breaker_state"], labels=["circuit"])
        for snapshot in all_breakers():
            family.add_metric([snapshot["name"]], BREAKER_STATE_VALUE.get(snapshot["state"], 0))
        return family

    @staticmethod
    def queue_lengths() -> Metric:
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
            family.add_metric([queue], sum(lengths[index * steps : (index + 1) * steps]))
        return family

    @staticmethod
    def stuck_messages() -> Metric:
        cutoff = timezone.now() - timedelta(seconds=settings.SWEEP_STUCK_AFTER_SECONDS)
        stuck = ProcessedMessage.objects.filter(
            status__in=[ProcessedMessage.Status.RECEIVED, ProcessedMessage.Status.PROCESSING],
            updated_at__lt=cutoff,
        ).count()
        return GaugeMetricFamily("inbox_stuck_messages", SCRAPE_TIME["inbox_stuck_messages"], value=stuck)

    @staticmethod
    def open_dead_letters() -> Metric:
        family = GaugeMetricFamily("dlq_open_entries", SCRAPE_TIME["dlq_open_entries"], labels=["reason"])
        rows = (
            DeadLetter.objects.filter(status=DeadLetter.Status.OPEN)
            .values("reason")
            .annotate(n=Count("id"))
            .order_by("reason")
        )
        for row in rows:
            family.add_metric([row["reason"]], row["n"])
        return family

    @staticmethod
    def outbox() -> list[Metric]:
        """The webhook's messages not yet on the request topic, and how long the oldest has waited:
        a relay that is down or a broker that refuses shows here before customers notice."""
        found = InboundMessage.objects.pending().aggregate(n=Count("id"), oldest=Min("stored_at"))
        age = (timezone.now() - found["oldest"]).total_seconds() if found["oldest"] else 0.0
        return [
            GaugeMetricFamily("whatsapp_outbox_backlog", SCRAPE_TIME["whatsapp_outbox_backlog"], value=found["n"]),
            GaugeMetricFamily(
                "whatsapp_outbox_oldest_age_seconds",
                SCRAPE_TIME["whatsapp_outbox_oldest_age_seconds"],
                value=max(0.0, age),
            ),
        ]

    @staticmethod
    def consumer_lag() -> Metric:
        """Per partition: the high watermark minus the group's committed offset (the low
        watermark when it has committed nothing yet), as kafka-consumer-groups shows it."""
        topic = settings.KAFKA_RESULT_TOPIC
        family = GaugeMetricFamily(
            "kafka_consumer_lag", SCRAPE_TIME["kafka_consumer_lag"], labels=["topic", "partition"]
        )
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
    return sorted({settings.CELERY_TASK_DEFAULT_QUEUE, "whatsapp", *(e.queue for e in executors)})
