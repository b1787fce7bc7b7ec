"""Handing inbox rows to Celery. The one place ingest, requeue and the
sweeper start a message's processing, so they all start it the same way."""
from __future__ import annotations

from collections.abc import Iterable

from config.celery import app

# Fail fast when the broker is down: ingest has its own backoff and must not
# sit inside kombu's retry loop while its consumer group waits.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}


def hand_off(runs: Iterable[tuple[str, int]]) -> int:
    """Enqueue the pipeline for each (processing_id, saga_run); raises if the broker is unreachable."""
    from whatsapp.tasks import pipeline_signature

    count = 0
    with app.producer_or_acquire() as producer:
        for processing_id, saga_run in runs:
            pipeline_signature(processing_id, saga_run).apply_async(
                producer=producer, retry=True, retry_policy=PUBLISH_RETRY_POLICY
            )
            count += 1
    return count
