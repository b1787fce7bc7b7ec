"""Real-broker helpers for tests: topics, producing, and reading group offsets."""

from __future__ import annotations

import socket
import struct
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from devtools import services


def create_topic(bootstrap: str, partitions: int = 3, prefix: str = "test.ai.result", name: str | None = None) -> str:
    """A new topic (a fresh name unless one is given), ready for a consumer to join."""
    name = name or f"{prefix}.{uuid.uuid4().hex[:10]}"
    services.create_topic({"bootstrap.servers": bootstrap}, name, partitions)
    return name


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    headers: list[tuple[str, bytes]] | None = None,
) -> int:
    """Produce (key, value) pairs and wait until the broker has them all."""
    return len(produce_messages(bootstrap, topic, (Out(value, key, headers) for key, value in records)))


@dataclass
class Out:
    """One record to produce, with whatever metadata a test wants on it."""

    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes | None]] | None = None
    timestamp: int | None = None
    """Milliseconds, handed to librdkafka as they are (None: the producer's clock)."""
    partition: int | None = None


def produce_messages(bootstrap: str, topic: str, messages: Iterable[Out]) -> list[tuple[int, int]]:
    """Produce the records in order and wait until the broker has them all; returns each
    record's (partition, offset), in the order given."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "message.max.bytes": 2_000_000})
    failures: list[str] = []
    coordinates: dict[int, tuple[int, int]] = {}

    def delivered_as(index: int):
        def delivered(err, msg):
            if err is not None:
                failures.append(str(err))
            else:
                coordinates[index] = (msg.partition(), msg.offset())

        return delivered

    count = 0
    for index, out in enumerate(messages):
        extra = {k: v for k, v in (("timestamp", out.timestamp), ("partition", out.partition)) if v is not None}
        while True:
            try:
                producer.produce(
                    topic, key=out.key, value=out.value, headers=out.headers, on_delivery=delivered_as(index), **extra
                )
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
    remaining = producer.flush(60)
    assert remaining == 0, f"{remaining} records not delivered"
    assert not failures, failures[:3]
    return [coordinates[i] for i in range(count)]


# --- the wire protocol, for what no client library sends -------------------------------------
@dataclass
class RawRecord:
    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    timestamp: int = 0


def produce_raw(bootstrap: str, topic: str, partition: int, records: list[RawRecord]) -> int:
    """Produce one record batch by speaking Kafka's Produce API (v3, record batch v2) on a
    socket, and return its first offset.

    confluent-kafka (and kafka-python) only send header names that are UTF-8 text, but the
    protocol carries any bytes and other clients send them; this is how a test puts such a
    record on the broker. Written here because no library in the project sends raw bytes as
    a header name. For a single-broker cluster (the test broker): the bootstrap is the leader."""
    base_ts = min((r.timestamp for r in records), default=0)
    body = b""
    for delta, record in enumerate(records):
        rec = b"\x00" + _varint(record.timestamp - base_ts) + _varint(delta)
        rec += _bytes_varint(record.key) + _bytes_varint(record.value) + _varint(len(record.headers))
        for name, value in record.headers:
            rec += _varint(len(name)) + name + _bytes_varint(value)
        body += _varint(len(rec)) + rec
    after_crc = (
        struct.pack(
            ">hiqqqhii", 0, len(records) - 1, base_ts, max(r.timestamp for r in records), -1, -1, -1, len(records)
        )
        + body
    )
    tail = struct.pack(">ibI", -1, 2, _crc32c(after_crc)) + after_crc
    batch = struct.pack(">qi", 0, len(tail)) + tail
    name = topic.encode()
    request = (
        struct.pack(">hhih", 0, 3, 1, 4)
        + b"test"  # Produce v3, correlation id 1, client id
        + struct.pack(">hhi", -1, -1, 30_000)  # no transactional id, acks=all, timeout
        + struct.pack(">ih", 1, len(name))
        + name
        + struct.pack(">iii", 1, partition, len(batch))
        + batch
    )
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _read(conn, 4))[0]
        response = _read(conn, size)
    # correlation id, 1 topic (name), 1 partition: index, error code, base offset, ...
    offset = 4 + 4
    (name_len,) = struct.unpack_from(">h", response, offset)
    offset += 2 + name_len + 4
    _, error, base_offset = struct.unpack_from(">ihq", response, offset)
    assert error == 0, f"produce to {topic}[{partition}] failed with Kafka error code {error}"
    return base_offset


def _read(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data


def _varint(value: int) -> bytes:
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        byte = zigzag & 0x7F
        zigzag >>= 7
        if zigzag:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _bytes_varint(value: bytes | None) -> bytes:
    return _varint(-1) if value is None else _varint(len(value)) + value


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def _crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), which record batches carry."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _read_to_end(bootstrap: str, topic: str, settle: float) -> tuple[list[int], list[Any]]:
    """(partitions, every record), reading the log from the start until every partition has
    reported EOF and nothing more came for `settle` seconds.

    Tansu answers ListOffsets(latest) with the last batch's base offset + 1 rather than the
    high watermark, so the watermark API cannot be trusted here; reading every record is
    slower but exact."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        partitions = list(meta.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records: list[Any] = []
        at_eof: set[int] = set()
        deadline = time.monotonic() + 120
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                if message.error() is None:
                    records.append(message)
                    at_eof.discard(message.partition())
                    quiet_since = time.monotonic()
                elif message.error().code() == KafkaError._PARTITION_EOF:
                    at_eof.add(message.partition())
            if len(at_eof) == len(partitions) and time.monotonic() - quiet_since >= settle:
                return partitions, records
        raise TimeoutError(f"could not read {topic} to its end")
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str, settle: float = 3.0) -> dict[int, int]:
    """The log end of each partition (last offset + 1), found by reading the log (_read_to_end)."""
    partitions, records = _read_to_end(bootstrap, topic, settle)
    ends = dict.fromkeys(partitions, 0)
    for message in records:
        ends[message.partition()] = max(ends[message.partition()], message.offset() + 1)
    return ends


def committed_offsets(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic, timeout=10)
        parts = [TopicPartition(topic, p) for p in meta.topics[topic].partitions]
        return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
    finally:
        consumer.close()


def outcomes(topic: str) -> dict[tuple[int, int], list[str]]:
    """What each record of `topic` became, by (partition, offset): "inbox" (the row it made),
    "duplicate" or "dead letter:<reason>" (at ingest). Exactly one each when nothing is lost
    or doubled."""
    from dlq.models import DeadLetter
    from whatsapp.models import DuplicateDelivery, ProcessedMessage

    found: dict[tuple[int, int], list[str]] = {}
    for p, o in ProcessedMessage.objects.filter(kafka_topic=topic).values_list("kafka_partition", "kafka_offset"):
        found.setdefault((p, o), []).append("inbox")
    for p, o in DuplicateDelivery.objects.filter(kafka_topic=topic).values_list("kafka_partition", "kafka_offset"):
        found.setdefault((p, o), []).append("duplicate")
    for p, o, reason in DeadLetter.objects.filter(kafka_topic=topic, stage="ingest").values_list(
        "kafka_partition", "kafka_offset", "reason"
    ):
        found.setdefault((p, o), []).append(f"dead letter:{reason}")
    return found


def read_all(bootstrap: str, topic: str, settle: float = 3.0) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of `topic` as (key, value), read to its end (_read_to_end): what a
    consumer of the topic would get."""
    return [(message.key(), message.value()) for message in _read_to_end(bootstrap, topic, settle)[1]]
