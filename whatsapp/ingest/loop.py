"""The Kafka ingest loop.

Modelled on arroyo's rule: an offset is committed only once everything before
it has been handed off. A batch is validated, written to Postgres and
enqueued as one unit; if Postgres or the broker is unreachable the partitions
are paused, the unit is retried with backoff, and nothing is committed until
it went through. Re-reading a batch is harmless (see whatsapp.ingest.intake).

Only an outage pauses ingest. Any other error in taking in a batch is a record's
fault: that record is isolated and dead-lettered as unprocessable, and the rest
of the batch is taken in and committed as usual (intake.take_in_and_hand_off).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from django.conf import settings
from django.db import close_old_connections, connection

from core.errors import is_outage
from core.metrics import counters
from whatsapp.ingest.intake import IntakeResult
from whatsapp.ingest.isolate import take_in_and_hand_off
from whatsapp.kafka import Record, consumer_config
from whatsapp.kafka.group_member import GroupMember

log = logging.getLogger("whatsapp.ingest")


@dataclass
class IngestStats:
    consumed: int = 0
    batches: int = 0
    commits: int = 0
    outages: int = 0
    result: IntakeResult = field(default_factory=IntakeResult)

    def summary(self) -> str:
        dead = sum(self.result.dead_lettered.values())
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.result.dead_lettered.items()))
        return (
            f"consumed {self.consumed} records in {self.batches} batches: "
            f"{self.result.created} new, {self.result.redelivered} re-read, "
            f"{self.result.duplicates} duplicates, {dead} dead-lettered" + (f" ({reasons})" if reasons else "")
        )


class Ingestor(GroupMember):
    name = "ingest"

    def __init__(
        self,
        *,
        topic: str | None = None,
        group_id: str | None = None,
        batch_size: int | None = None,
        max_messages: int | None = None,
        idle_exit: float | None = None,
        consumer_factory: Callable[[dict], Consumer] = Consumer,
    ) -> None:
        self.topic = topic or settings.KAFKA_RESULT_TOPIC
        self.group_id = group_id or settings.KAFKA_GROUP_ID
        self.batch_size = batch_size or settings.INGEST_BATCH_SIZE
        self.log = log
        self._join(max_messages=max_messages, idle_exit=idle_exit)
        self.stats = IngestStats()
        self.consumer = consumer_factory(consumer_config(self.group_id, error_cb=self._on_error))

    def run(self) -> IngestStats:
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("ingest: consuming %s as group %s", self.topic, self.group_id)
        try:
            while not self.stopping:
                if self._idle_expired() or self._reached_max():
                    break
                records = self._records(self._poll(self._next_batch_size()))
                if not records:
                    continue
                self.stats.consumed += len(records)
                self._process(records)
                # Idle means nothing to read, not a slow batch: the clock
                # starts when the batch is handed off.
                self._last_activity = time.monotonic()
        finally:
            self.consumer.close()
            close_old_connections()
        log.info("ingest: %s", self.stats.summary())
        return self.stats

    # -- one batch -----------------------------------------------------------
    def _process(self, records: list[Record]) -> None:
        self.stats.batches += 1
        delay = 0.5
        paused: list[TopicPartition] = []
        while True:
            records = [r for r in records if (r.topic, r.partition) in self.assigned]
            if not records:
                log.warning("ingest: partitions revoked mid-batch; their new owner re-reads them")
                break
            started = time.perf_counter()
            try:
                result = take_in_and_hand_off(records)
            except Exception as exc:  # Postgres or broker down; keep the batch, commit nothing
                self.stats.outages += 1 if not paused else 0
                log.warning(
                    "ingest: cannot hand off batch (%s: %s); partitions paused, retrying in %.1fs",
                    type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "",
                    delay,
                    exc_info=not _is_outage(exc),
                )
                connection.close()
                if not paused:
                    paused = [TopicPartition(t, p) for t, p in sorted(self.assigned)]
                    self.consumer.pause(paused)
                if not self._wait(delay):
                    log.warning("ingest: stopping during an outage; %d records left uncommitted", len(records))
                    self._resume(paused)
                    return
                delay = min(delay * 2, settings.INGEST_MAX_BACKOFF_SECONDS) * random.uniform(0.8, 1.2)
                continue
            counters.ingest_batch(time.perf_counter() - started)
            self.stats.result.merge(result)
            self.stats.result.new.clear()
            if settings.INGEST_DEBUG_COMMIT_DELAY_SECONDS:
                time.sleep(settings.INGEST_DEBUG_COMMIT_DELAY_SECONDS)
            self._commit(records)
            break
        self._resume(paused)

    def _commit(self, records: list[Record]) -> None:
        next_offsets: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            next_offsets[key] = max(next_offsets.get(key, 0), record.offset + 1)
        offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
            self.stats.commits += 1
        except KafkaException as exc:
            # The batch is safely handed off; re-reading it is harmless.
            log.warning("ingest: offset commit failed (%s); records will be re-read", exc)

    def _wait(self, seconds: float) -> bool:
        """Sleep while serving the consumer group; False if asked to stop."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.stopping:
                return False
            message = self.consumer.poll(0.2)
            if message is not None and not message.error():
                # A partition assigned during the outage: rewind and hold it.
                # A message without an error has its topic, partition and offset; the stubs allow None.
                tp = TopicPartition(
                    cast(str, message.topic()), cast(int, message.partition()), cast(int, message.offset())
                )
                self.consumer.pause([tp])
                self.consumer.seek(tp)
        return True

    def _resume(self, paused: list[TopicPartition]) -> None:
        if paused:
            current = [tp for tp in paused if (tp.topic, tp.partition) in self.assigned]
            if current:
                self.consumer.resume(current)
            log.info("ingest: resumed")
        # Partitions paused in _wait (assigned mid-outage) are resumed too.
        assigned = [TopicPartition(t, p) for t, p in self.assigned]
        if assigned:
            self.consumer.resume(assigned)

    # -- helpers -------------------------------------------------------------
    def _poll(self, size: int) -> list[Message]:
        """Up to `size` records: waits (up to a second) for the first, then takes what the
        consumer has already fetched without waiting. So at a low rate a record is taken in
        as soon as it is there, not after a second spent filling a batch, and under load the
        batches are as full as what arrived meanwhile."""
        messages = self.consumer.consume(num_messages=1, timeout=1.0)
        if messages and size > 1:
            messages += self.consumer.consume(num_messages=size - 1, timeout=0)
        return messages

    def _records(self, messages: list[Message]) -> list[Record]:
        records = []
        for message in messages:
            error = message.error()
            if error is None:
                records.append(Record.from_message(message))
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("ingest: consumer error: %s", error)
        return records

    def _next_batch_size(self) -> int:
        if self.max_messages is None:
            return self.batch_size
        return max(1, min(self.batch_size, self.max_messages - self.stats.consumed))

    def _consumed(self) -> int:
        return self.stats.consumed


# The outage test lives with the intake, which tells an outage from a bad record.
_is_outage = is_outage
