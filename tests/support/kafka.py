"""Real-broker helpers for tests: topics, producing, and reading group offsets."""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def create_topic(bootstrap: str, partitions: int = 3, prefix: str = "test.ai.result", name: str | None = None) -> str:
    name = name or f"{prefix}.{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        meta = admin.list_topics(name, timeout=10)
        topic = meta.topics.get(name)
        if topic is not None and topic.error is None and len(topic.partitions) == partitions:
            return name
        time.sleep(0.2)
    raise TimeoutError(f"topic {name} did not appear")


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]],
            headers: list[tuple[str, bytes]] | None = None) -> int:
    """Produce (key, value) pairs and wait until the broker has them all."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "message.max.bytes": 2_000_000})
    failures: list[str] = []

    def delivered(err, _msg):
        if err is not None:
            failures.append(str(err))

    count = 0
    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value, headers=headers, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
    remaining = producer.flush(60)
    assert remaining == 0, f"{remaining} records not delivered"
    assert not failures, failures[:3]
    return count


def end_offsets(bootstrap: str, topic: str, settle: float = 3.0) -> dict[int, int]:
    """The log end of each partition (last offset + 1), found by reading the log.

    Tansu answers ListOffsets(latest) with the last batch's base offset + 1
    rather than the high watermark, so the watermark API cannot be trusted
    here; reading every record is slower but exact."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        meta = consumer.list_topics(topic, timeout=10)
        partitions = list(meta.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        ends = {p: 0 for p in partitions}
        at_eof: set[int] = set()
        deadline = time.monotonic() + 120
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, 0.5)
            for message in batch:
                if message.error() is None:
                    ends[message.partition()] = max(ends[message.partition()], message.offset() + 1)
                    at_eof.discard(message.partition())
                    quiet_since = time.monotonic()
                elif message.error().code() == KafkaError._PARTITION_EOF:
                    at_eof.add(message.partition())
            if len(at_eof) == len(partitions) and time.monotonic() - quiet_since >= settle:
                return ends
        raise TimeoutError(f"could not read {topic} to its end")
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic, timeout=10)
        parts = [TopicPartition(topic, p) for p in meta.topics[topic].partitions]
        return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
    finally:
        consumer.close()
