"""Reading a range of a Kafka topic again, for replay: by offsets per partition or by a time
range, with a consumer of its own that is assigned partitions and never commits, so the
ingest group's offsets are untouched.

Where a partition ends is found by reading it to its end (partition EOF), not from the
broker's watermarks, which Tansu misreports: those only size the progress bar. A broker
that sends nothing for READ_STALL_SECONDS ends the read with ReplayError rather than a
wait for ever.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from django.conf import settings

from whatsapp.kafka import Record, consumer_config

log = logging.getLogger(__name__)

# Give up when the broker sends nothing at all for this long before every
# selected partition has reached its end.
READ_STALL_SECONDS = 30.0


class ReplayError(Exception):
    """The range cannot be read (unknown topic or partition, broker silent)."""


@dataclass(frozen=True)
class Selection:
    """Which records to replay. Offsets are per partition and inclusive; the
    time range is [since, until) on each record's Kafka timestamp."""

    topic: str
    partitions: tuple[int, ...] | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def wants(self, record: Record) -> bool:
        if self.from_offset is not None and record.offset < self.from_offset:
            return False
        if self.to_offset is not None and record.offset > self.to_offset:
            return False
        if self.since is None and self.until is None:
            return True
        # Compared in milliseconds, so a timestamp no datetime can hold (past 9999) still sorts.
        millis = record.millis
        if millis is None:
            return False
        if self.since is not None and millis < _millis(self.since):
            return False
        return self.until is None or millis < _millis(self.until)


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def read_range(
    selection: Selection,
    *,
    batch_size: int | None = None,
    stall_seconds: float = READ_STALL_SECONDS,
    on_total: Callable[[int], None] | None = None,
    on_read: Callable[[int], None] | None = None,
) -> Iterator[list[Record]]:
    """Yield the selected records in batches, reading each selected partition
    from its start point to its end as it stands (or to --to-offset).
    on_total is told once how many records lie between the start points and the
    ends (what is read, not all of it selected), on_read how many each poll read."""
    batch_size = batch_size or settings.INGEST_BATCH_SIZE
    consumer = Consumer(
        consumer_config(
            f"{settings.KAFKA_GROUP_ID}.replay.{uuid.uuid4().hex[:8]}",
            **{"enable.partition.eof": True, "error_cb": _on_error},
        )
    )
    try:
        partitions = _partitions(consumer, selection)
        starts = _start_offsets(consumer, selection, partitions)
        if on_total is not None:
            on_total(_records_to_read(consumer, selection, starts))
        consumer.assign([TopicPartition(selection.topic, p, starts[p]) for p in partitions])
        pending = set(partitions)
        last_progress = _now()
        while pending:
            messages = consumer.consume(num_messages=batch_size, timeout=1.0)
            batch: list[Record] = []
            read = 0
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(message.partition())
                    elif error.fatal() or error.code() in (
                        KafkaError.UNKNOWN_TOPIC_OR_PART,
                        KafkaError._UNKNOWN_PARTITION,
                    ):
                        raise ReplayError(f"reading {selection.topic}[{message.partition()}]: {error.str()}")
                    else:
                        log.warning("replay: kafka: %s", error.str())
                    continue
                if message.partition() not in pending:
                    continue
                read += 1
                record = Record.from_message(message)
                if selection.to_offset is not None and record.offset >= selection.to_offset:
                    pending.discard(record.partition)
                if selection.wants(record):
                    batch.append(record)
            if read and on_read is not None:
                on_read(read)
            if messages:
                last_progress = _now()
            elif _now() - last_progress > stall_seconds:
                left = ", ".join(str(p) for p in sorted(pending))
                raise ReplayError(
                    f"no records from the broker for {stall_seconds:.0f}s; "
                    f"partitions {left} of {selection.topic} not read to their end"
                )
            if batch:
                yield batch
    finally:
        consumer.close()


def _partitions(consumer: Consumer, selection: Selection) -> list[int]:
    try:
        metadata = consumer.list_topics(selection.topic, timeout=10)
    except KafkaException as exc:
        raise ReplayError(f"cannot reach Kafka at {settings.KAFKA_BOOTSTRAP_SERVERS}: {exc}") from None
    topic = metadata.topics.get(selection.topic)
    if topic is None or topic.error is not None or not topic.partitions:
        raise ReplayError(f"topic {selection.topic!r} does not exist on {settings.KAFKA_BOOTSTRAP_SERVERS}")
    existing = sorted(topic.partitions)
    if selection.partitions is None:
        return existing
    missing = sorted(set(selection.partitions) - set(existing))
    if missing:
        raise ReplayError(
            f"topic {selection.topic!r} has partitions {existing[0]}..{existing[-1]}; "
            f"no partition {', '.join(map(str, missing))}"
        )
    return sorted(set(selection.partitions))


def _records_to_read(consumer: Consumer, selection: Selection, starts: dict[int, int]) -> int:
    """Records between each partition's start point and its end as it stands (or
    --to-offset), by the broker's watermarks: the total a progress bar counts to."""
    total = 0
    for partition, start in starts.items():
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(selection.topic, partition), timeout=10)
        except KafkaException as exc:
            raise ReplayError(f"cannot reach Kafka at {settings.KAFKA_BOOTSTRAP_SERVERS}: {exc}") from None
        first = low if start < 0 else max(start, low)
        end = high if selection.to_offset is None else min(high, selection.to_offset + 1)
        total += max(0, end - first)
    return total


def _start_offsets(consumer: Consumer, selection: Selection, partitions: list[int]) -> dict[int, int]:
    """Where to start reading each partition: --from-offset, else the first
    offset at or after --since, else the beginning.

    The time lookup (ListOffsets by timestamp) is only a shortcut: every
    record is still checked against the range by its own timestamp. That
    keeps the result exact on brokers whose answer is off; Tansu, the
    embedded broker, answers a time after the last record with offset 0
    instead of the log end, which costs a full read but loses nothing."""
    starts = dict.fromkeys(partitions, selection.from_offset if selection.from_offset is not None else OFFSET_BEGINNING)
    if selection.since is None or selection.from_offset is not None:
        return starts
    millis = int(selection.since.timestamp() * 1000)
    try:
        found = consumer.offsets_for_times([TopicPartition(selection.topic, p, millis) for p in partitions], timeout=10)
    except KafkaException as exc:
        log.warning("replay: offsets by time unavailable (%s); reading from the beginning", exc)
        return starts
    for tp in found:
        if tp.error is None and tp.offset >= 0:
            starts[tp.partition] = tp.offset
    return starts


def _on_error(error: KafkaError) -> None:
    log.log(logging.ERROR if error.fatal() else logging.WARNING, "replay: kafka: %s", error)


def _now() -> float:
    return time.monotonic()
