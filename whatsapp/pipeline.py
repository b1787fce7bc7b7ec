"""Handing inbox rows to Celery. The one place ingest, requeue and the
sweeper start a message's processing, so they all start it the same way."""
from __future__ import annotations

from collections.abc import Iterable

from config.celery import app

# Fail fast when the broker is down: ingest has its own backoff and must not
# sit inside kombu's retry loop while its consumer group waits.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}


def hand_off(runs: Iterable[tuple[str, int]]) -> int:
    """Enqueue the pipeline for each (processing_id, saga_run), each on its
    business's lane (whatsapp.fairness); raises if the broker is unreachable."""
    from whatsapp.fairness import lanes
    from whatsapp.models import ProcessedMessage
    from whatsapp.tasks import pipeline_signature

    runs = list(runs)
    if not runs:
        return 0
    business_of = dict(ProcessedMessage.objects.filter(processing_id__in=[pid for pid, _ in runs])
                       .values_list("processing_id", "business_id"))
    lane_of = lanes([business_of.get(pid, "") for pid, _ in runs])
    with app.producer_or_acquire() as producer:
        for (processing_id, saga_run), lane in zip(runs, lane_of):
            pipeline_signature(processing_id, saga_run, lane=lane).apply_async(
                producer=producer, retry=True, retry_policy=PUBLISH_RETRY_POLICY
            )
    return len(runs)
