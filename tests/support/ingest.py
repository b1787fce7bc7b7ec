"""Ingest test helpers shared by the integration and fault tests: records to produce,
what waits in the pipeline queue, and what a consumer group committed."""

from __future__ import annotations

import redis

from tests.support import kafka
from tests.support.events import encode, event


def queued(redis_client: redis.Redis) -> int:
    """Tasks waiting in the pipeline queue, on any priority (kombu keeps a
    Redis list per priority step: "pipeline", "pipeline\x06\x163", ...)."""
    return sum(redis_client.llen(key) for key in redis_client.keys("pipeline*"))


def valid_records(count: int, prefix: str = "p", customers: int = 37) -> list[tuple[bytes, bytes]]:
    """`count` order messages from `customers` customers of the prefix's own: a customer's
    messages run one at a time (whatsapp.pipeline.turns), so only the first of each is handed on
    while the ones before it have not run."""
    records = []
    for i in range(count):
        lead = f"{prefix}-lead-{i % customers}"
        records.append((lead.encode(), encode(event(f"{prefix}-{i:05d}", lead_id=lead))))
    return records


def committed_total(bootstrap: str, topic: str, group: str) -> int:
    return sum(max(o, 0) for o in kafka.committed_offsets(bootstrap, topic, group).values())
