"""confluent-kafka configuration and record helpers shared by ingest, replay and tests."""
from __future__ import annotations

import base64
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from django.conf import settings


def client_config(**overrides: Any) -> dict[str, Any]:
    """The settings every client shares: brokers and security, passed through as-is."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS,
        "client.id": f"whatsapp-handler-{socket.gethostname()}",
        **settings.KAFKA_SECURITY,
    }
    config.update(overrides)
    return config


def consumer_config(group_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    return client_config(
        **{
            "group.id": group_id or settings.KAFKA_GROUP_ID,
            # Offsets are committed by hand, only after the records are in
            # Postgres and handed to the pipeline.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": settings.KAFKA_SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": 1_000,
            "max.poll.interval.ms": 300_000,
            "fetch.message.max.bytes": 1_048_576,
            **overrides,
        }
    )


def producer_config(**overrides: Any) -> dict[str, Any]:
    return client_config(**{"acks": "all", "enable.idempotence": True, "linger.ms": 5, **overrides})


@dataclass(frozen=True)
class Record:
    """One consumed Kafka record, detached from librdkafka's message object."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: datetime | None = None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)

    @classmethod
    def from_message(cls, message: Any) -> Record:
        kind, millis = message.timestamp()
        stamp = datetime.fromtimestamp(millis / 1000, tz=timezone.utc) if kind and millis and millis > 0 else None
        return cls(
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            value=message.value(),
            key=message.key(),
            timestamp=stamp,
            headers=list(message.headers() or []),
        )

    @property
    def coordinates(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower() and value is not None:
                return value.decode("utf-8", errors="replace")
        return None

    def headers_json(self) -> list[dict[str, str | None]]:
        """Headers in a JSON-safe form that keeps non-UTF-8 values exactly."""
        out: list[dict[str, str | None]] = []
        for key, value in self.headers:
            if value is None:
                out.append({"key": key, "value": None})
                continue
            try:
                out.append({"key": key, "value": value.decode("utf-8")})
            except UnicodeDecodeError:
                out.append({"key": key, "value_b64": base64.b64encode(value).decode("ascii")})
        return out


def headers_from_json(items: list[dict[str, str | None]]) -> list[tuple[str, bytes | None]]:
    headers: list[tuple[str, bytes | None]] = []
    for item in items:
        if "value_b64" in item and item["value_b64"] is not None:
            headers.append((item["key"], base64.b64decode(item["value_b64"])))
        elif item.get("value") is None:
            headers.append((item["key"], None))
        else:
            headers.append((item["key"], item["value"].encode("utf-8")))
    return headers
