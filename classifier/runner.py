"""The `classify` loop: one result event on KAFKA_RESULT_TOPIC for each request on
KAFKA_REQUEST_TOPIC, at least once.

A request's offset is committed only after its result was acknowledged by the broker
(idempotent producer, acks=all). A crash in between re-reads the request and publishes its
result again with the same processing_id, which ingest counts as a duplicate. While Kafka or
Postgres is unreachable the loop keeps retrying the batch in hand and commits nothing.

A request that fails the request contract is logged (its errors, never its text) and skipped
with a counter: the AI side has no dead-letter queue, and the relay that published it validated
it already, so such a record is a bug upstream to fix, not a message to replay from here.
A request for a business unknown here is classified with an empty catalog: ingest dead-letters
its result as unknown_business, which is where an operator looks.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from django.conf import settings
from django.db import close_old_connections, connection

from classifier.backends.base import Classification, Classifier
from classifier.catalog import catalog_for
from classifier.results import result_value
from whatsapp.contracts.request import parse_request
from whatsapp.contracts.result import ContractError
from whatsapp.kafka import Record, consumer_config, producer_config
from whatsapp.kafka.group_member import GroupMember

log = logging.getLogger("classifier.runner")

MAX_BACKOFF_SECONDS = 30.0
BATCH_SIZE = 100
FLUSH_SECONDS = 10.0


@dataclass
class ClassifyStats:
    consumed: int = 0
    classified: int = 0
    invalid_requests: int = 0
    invalid_results: int = 0
    backend_errors: int = 0
    outages: int = 0
    commits: int = 0

    def summary(self) -> str:
        return (
            f"consumed {self.consumed} requests: {self.classified} classified, "
            f"{self.invalid_requests} invalid requests skipped, "
            f"{self.backend_errors} backend failures sent as UNKNOWN, "
            f"{self.invalid_results} results refused by the contract"
        )


class _Outage(Exception):
    """The broker did not acknowledge every result of the batch in time."""


class ClassifyRunner(GroupMember):
    name = "classify"

    def __init__(
        self,
        backend: Classifier,
        *,
        topic: str | None = None,
        result_topic: str | None = None,
        group_id: str | None = None,
        max_messages: int | None = None,
        idle_exit: float | None = None,
    ) -> None:
        self.backend = backend
        self.topic = topic or settings.KAFKA_REQUEST_TOPIC
        self.result_topic = result_topic or settings.KAFKA_RESULT_TOPIC
        self.group_id = group_id or settings.CLASSIFIER_GROUP_ID
        self.log = log
        self._join(max_messages=max_messages, idle_exit=idle_exit)
        self.stats = ClassifyStats()
        self.consumer = Consumer(consumer_config(self.group_id, error_cb=self._on_error))
        self.producer = Producer(producer_config(error_cb=self._on_error))

    def run(self) -> ClassifyStats:
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("classify: consuming %s as group %s into %s", self.topic, self.group_id, self.result_topic)
        try:
            while not self.stopping and not self._idle_expired() and not self._reached_max():
                records = self._poll()
                if not records:
                    continue
                self.stats.consumed += len(records)
                self._process(records)
                self._last_activity = time.monotonic()
        finally:
            self.producer.flush(5)
            self.consumer.close()
            close_old_connections()
        log.info("classify: %s", self.stats.summary())
        return self.stats

    def _process(self, records: list[Record]) -> None:
        delay = 0.5
        paused: list[TopicPartition] = []
        try:
            self._retry(records, delay, paused)
        finally:
            current = [TopicPartition(t, p) for t, p in self.assigned]
            if paused and current:
                self.consumer.resume(current)

    def _retry(self, records: list[Record], delay: float, paused: list[TopicPartition]) -> None:
        while True:
            try:
                self._classify_and_publish(records)
            except Exception as exc:  # Kafka or Postgres down: keep the batch, commit nothing
                self.stats.outages += 1
                log.warning(
                    "classify: cannot classify and publish the batch (%s: Postgres or Kafka unreachable); "
                    "retrying in %.1fs",
                    type(exc).__name__,
                    delay,
                )
                connection.close()
                if not paused:
                    paused.extend(TopicPartition(t, p) for t, p in sorted(self.assigned))
                    self.consumer.pause(paused)
                if not self._wait(delay):
                    log.warning("classify: stopping during an outage; %d requests left uncommitted", len(records))
                    return
                delay = min(delay * 2, MAX_BACKOFF_SECONDS) * random.uniform(0.8, 1.2)
                continue
            self._commit(records)
            return

    def _classify_and_publish(self, records: list[Record]) -> None:
        failures: list[str] = []

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                failures.append(str(error))

        sent = 0
        for record in records:
            try:
                request = parse_request(record.value)
            except ContractError as exc:
                self.stats.invalid_requests += 1
                log.warning(
                    "classify: skipping an invalid request at %s[%d]@%d (%s): %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    exc.reason,
                    exc,
                )
                continue
            started = time.perf_counter()
            catalog = catalog_for(request.business_id)
            try:
                classification = self.backend.classify(request, catalog)
            except Exception as exc:
                # The backend's fault with this message, not an outage: retrying would loop on it
                # forever. It goes on as UNKNOWN with no confidence, which the pipeline sends to a
                # person, so the customer's message is not lost.
                self.stats.backend_errors += 1
                log.error(
                    "classify: the backend failed on %s (%s); publishing it as UNKNOWN",
                    request.processing_id,
                    type(exc).__name__,
                )
                classification = Classification(intent="UNKNOWN", confidence=0.0, language=catalog.default_language)
            elapsed_ms = int((time.perf_counter() - started) * 1000)
            try:
                value, event = result_value(request, classification, self.backend.model_name, elapsed_ms)
            except ContractError as exc:
                self.stats.invalid_results += 1
                log.error("classify: the backend's result for %s breaks the contract: %s", request.processing_id, exc)
                continue
            self._produce(event.lead_id.encode(), value, delivered)
            sent += 1
        remaining = self.producer.flush(FLUSH_SECONDS)
        if remaining or failures:
            raise _Outage(f"{remaining} results unacknowledged, {len(failures)} failed")
        self.stats.classified += sent

    def _produce(self, key: bytes, value: bytes, on_delivery: Callable[[KafkaError | None, Message], None]) -> None:
        while True:
            try:
                self.producer.produce(
                    self.result_topic,
                    key=key,
                    value=value,
                    headers=[("content-type", b"application/json")],
                    on_delivery=on_delivery,
                )
                return
            except BufferError:
                self.producer.poll(0.1)

    def _commit(self, records: list[Record]) -> None:
        ends: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            ends[key] = max(ends.get(key, 0), record.offset + 1)
        try:
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()], asynchronous=False)
            self.stats.commits += 1
        except KafkaException as exc:
            # The results are out; re-reading the requests only repeats results ingest dedupes.
            log.warning("classify: offset commit failed (%s); requests will be re-read", exc)

    def _wait(self, seconds: float) -> bool:
        """Sleep while serving the consumer group and the producer's callbacks; False if asked to stop."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.stopping:
                return False
            self.producer.poll(0.1)
            message = self.consumer.poll(0.1)
            if message is not None and not message.error():
                # A partition assigned during the outage: rewind it and hold it until the batch is out.
                tp = TopicPartition(str(message.topic()), int(message.partition() or 0), int(message.offset() or 0))
                self.consumer.pause([tp])
                self.consumer.seek(tp)
        return True

    def _poll(self) -> list[Record]:
        messages = self.consumer.consume(num_messages=BATCH_SIZE if self.max_messages is None else 1, timeout=1.0)
        records = []
        for message in messages:
            error = message.error()
            if error is None:
                records.append(Record.from_message(message))
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("classify: consumer error: %s", error)
        return records

    def _consumed(self) -> int:
        return self.stats.consumed
