"""confluent-kafka client settings shared by every consumer and producer (ingest, the relay,
replay, the classifier and the tests): the brokers and security come from the settings once."""

from __future__ import annotations

import socket
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
            # How long the broker may hold a fetch when it has nothing new. Apache Kafka
            # answers as soon as a record arrives anyway; Tansu waits the time out, so with
            # it this bounds the delay a quiet topic adds to a record (librdkafka's default,
            # 500 ms, was half the latency budget). The price, with Tansu: an idle
            # consumer's fetches cost it about a tenth of a core at 10 ms, half that at 25 ms
            # (p95 delay 7 ms against 14 ms, measured), a hundredth at the default 100 ms.
            "fetch.wait.max.ms": settings.KAFKA_FETCH_WAIT_MAX_MS,
            **overrides,
        }
    )


def producer_config(**overrides: Any) -> dict[str, Any]:
    return client_config(**{"acks": "all", "enable.idempotence": True, "linger.ms": 5, **overrides})
