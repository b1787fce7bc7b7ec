"""Handing inbox rows to Celery. The one place ingest, requeue and the
sweeper start a message's processing, so they all start it the same way."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from config.celery import app

if TYPE_CHECKING:
    from whatsapp.tracing import RecordTrace

# Fail fast when the broker is down: ingest has its own backoff and must not
# sit inside kombu's retry loop while its consumer group waits.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}


def hand_off(runs: Iterable[tuple[str, int]], traces: Mapping[str, RecordTrace] | None = None) -> int:
    """Enqueue the pipeline for each (processing_id, saga_run), each on its
    business's lane (whatsapp.fairness); raises if the broker is unreachable.

    Each chain is sent inside its message's trace, so every task joins it: the record's live
    trace from ingest (`traces`, finished here once sent), else the trace id stored on the
    inbox row (requeue, the sweeper, a record read again)."""
    from whatsapp.fairness import lanes
    from whatsapp.models import ProcessedMessage
    from whatsapp.tasks import pipeline_signature
    from whatsapp.tracing import message_trace

    runs = list(runs)
    if not runs:
        return 0
    traces = traces or {}
    rows = {pid: (business_id, trace_id) for pid, business_id, trace_id in ProcessedMessage.objects.filter(
        processing_id__in=[pid for pid, _ in runs]).values_list("processing_id", "business_id", "trace_id")}
    lane_of = lanes([rows.get(pid, ("", ""))[0] for pid, _ in runs])
    with app.producer_or_acquire() as producer:
        for (processing_id, saga_run), lane in zip(runs, lane_of):
            live = traces.get(processing_id)
            context = live.active() if live is not None else message_trace(
                rows.get(processing_id, ("", ""))[1] or None, name="whatsapp.hand_off", processing_id=processing_id)
            with context:
                pipeline_signature(processing_id, saga_run, lane=lane).apply_async(
                    producer=producer, retry=True, retry_policy=PUBLISH_RETRY_POLICY
                )
            if live is not None:
                live.finish()
    return len(runs)
