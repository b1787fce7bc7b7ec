"""Stage 5: the message processed, with its lead's activity, in one statement. The last
thing the run's tail task does (whatsapp.tasks.reply_and_finish), after the reply; the
read receipt went before it (whatsapp.saga.read)."""

from __future__ import annotations

import logging

from core import tracing
from core.metrics import counters
from whatsapp.models import ProcessedMessage
from whatsapp.pipeline import turns
from whatsapp.saga.run import SagaStopped, active_message

log = logging.getLogger(__name__)


def finish_run(processing_id: str, saga_run: int) -> bool:
    """Mark the message processed, and hand its conversation's turn to the customer's next
    message (whatsapp.pipeline.turns; the finish's own statement drops the turn when none
    waits). False when the run has moved on or failed; SagaStopped when a step is not done;
    MessagePurged when its inbox row is gone."""
    done = ProcessedMessage.finish(processing_id, saga_run)
    if done is None:
        message = active_message(processing_id, saga_run)  # SagaStopped / MessagePurged: the run is over
        if message.failed_stage:
            return False
        raise SagaStopped(f"{processing_id} reached finish with unfinished steps")
    if not done["turn_released"]:
        turns.pass_on(done["business_id"], done["lead_id"], processing_id, saga_run)
    tracing.note_message(ProcessedMessage(processing_id=processing_id, lead_id=done["lead_id"], intent=done["intent"]))
    since = done["kafka_timestamp"] or done["received_at"]
    counters.processed(done["intent"], since)
    elapsed = (done["finished_at"] - since).total_seconds() if since else None
    log.info(
        "finish: processed (%s)",
        done["intent"],
        extra={"duration_ms": round(elapsed * 1000, 1) if elapsed is not None else None},
    )
    return True
