"""How a dead letter of this pipeline is sent through again: the DLQ's requeue handler
(settings.DLQ_REQUEUE_HANDLER, see dlq/requeue.py).

A pipeline failure starts a new saga run of the same inbox row: the run number is
part of every executor's idempotency key, so what the failed run compensated is
done again once, and nothing is done twice within a run. A failed reply is sent
again in the same run (the actions stand). Either waits, as a new message would, while
another message of the same customer runs (whatsapp.pipeline.turns). An ingest failure (say, an unknown
business since created) is validated again from the raw record and taken in like a
new one; one whose processing_id belongs to another business's message
(processing_id_conflict) is refused as long as that message holds it.

The broker is asked first: with it down, nothing is changed and the DLQ is told
(RequeueUnavailable), so a bulk requeue during a Redis outage leaves every entry as it
was. The hand-off itself follows the commit (a worker must find the new run); should
the broker fail in between, the entry stays REQUEUED with its history and the row
waits in RECEIVED (or PROCESSING, for a reply), where the sweeper starts it again
after SWEEP_STUCK_AFTER_SECONDS: logged, never a lost message or an error page."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from django.db import transaction

from config.health import check_broker
from core.errors import is_outage
from core.tracing import message_trace
from dlq.models import DeadLetter
from dlq.requeue import RequeueRefused, RequeueUnavailable
from whatsapp.contracts.result import ContractError, parse_event
from whatsapp.ingest.intake import take_in
from whatsapp.ingest.validate import PROCESSING_ID_CONFLICT
from whatsapp.kafka import Record, headers_from_json
from whatsapp.models import ProcessedMessage
from whatsapp.models.outbound import AGENT_REPLY_PREFIX
from whatsapp.pipeline import turns
from whatsapp.pipeline.chains import reply_signature
from whatsapp.pipeline.hand_off import hand_off

log = logging.getLogger(__name__)


def requeue_dead_letter(entry: DeadLetter) -> int | None:
    """Send the entry's message through again once the caller's transaction commits;
    the saga run it starts. RequeueRefused when it cannot be, as things stand;
    RequeueUnavailable, before anything is changed, when the broker cannot be reached."""
    try:
        check_broker()
    except Exception as exc:
        # By class only: a broker error's text may carry its URL.
        raise RequeueUnavailable(
            f"the Celery broker (Redis) cannot be reached ({type(exc).__name__}): nothing was requeued; "
            "try again once it is back"
        ) from None
    if entry.stage == DeadLetter.Stage.INGEST:
        return _take_in_again(entry)
    if entry.processing_id.startswith(AGENT_REPLY_PREFIX):
        raise RequeueRefused(
            "an agent's reply (whatsapp.send.agent): no pipeline run stands behind it to run again; "
            "the agent writes it again from the conversation's page"
        )
    message = _inbox_row(entry.processing_id)
    if entry.stage == DeadLetter.Stage.REPLY:
        # The actions stand; only the reply is sent again, in the same run.
        if message.status != ProcessedMessage.Status.FAILED or message.saga_run != entry.saga_run:
            raise RequeueRefused(
                f"{message.processing_id} has moved on since this entry (now {message.status}, run {message.saga_run})"
            )
        message.reopen_for_reply()
        if not turns.may_run(message):
            return message.saga_run  # behind an earlier message of the customer's: it starts this one

        def send_again(
            pid: str = message.processing_id, run: int = message.saga_run, trace_id: str = message.trace_id
        ) -> None:
            with message_trace(trace_id, name="whatsapp.requeue", processing_id=pid):
                reply_signature(pid, run).apply_async()

        after_commit(message.processing_id, send_again)
        return message.saga_run
    if message.status not in {ProcessedMessage.Status.FAILED, ProcessedMessage.Status.PROCESSED}:
        raise RequeueRefused(f"{message.processing_id} is {message.status}; wait until its run has ended")
    message.start_new_run()
    if not turns.may_run(message):
        return message.saga_run
    runs = [(message.processing_id, message.saga_run)]
    # Enqueue only once the new run is committed, so a worker finds it.
    after_commit(message.processing_id, lambda: hand_off(runs))
    return message.saga_run


def after_commit(processing_id: str, send: Callable[[], object]) -> None:
    """Run `send` once the requeue is committed. Should the broker fail in the moment since
    it was asked, the requeue stands (committed, with its history): say so, and leave the
    row to the sweeper rather than fail the page or the command that asked."""

    def sending() -> None:
        try:
            send()
        except Exception as exc:
            log.warning(
                "requeue of %s is committed but the broker refused its hand-off (%s); the sweeper starts it "
                "again after SWEEP_STUCK_AFTER_SECONDS",
                processing_id,
                type(exc).__name__,
            )

    transaction.on_commit(sending)


def _take_in_again(entry: DeadLetter) -> int | None:
    raw = bytes(entry.raw_value) if entry.raw_value is not None else None
    try:
        parse_event(raw)
    except ContractError as exc:
        raise RequeueRefused(f"the record is still invalid: {exc}") from None
    headers = headers_from_json(entry.kafka_headers or [])
    if entry.trace_id and not any((k or "").lower() in ("sentry-trace", "traceparent") for k, _ in headers):
        # Carry on the trace the dead letter was written in.
        headers.append(("sentry-trace", f"{entry.trace_id}-{uuid.uuid4().hex[:16]}".encode()))
    record = Record(
        topic=entry.kafka_topic,
        partition=entry.kafka_partition if entry.kafka_partition is not None else -1,
        offset=entry.kafka_offset if entry.kafka_offset is not None else -entry.pk,
        value=raw,
        key=bytes(entry.kafka_key) if entry.kafka_key is not None else None,
        timestamp=entry.kafka_timestamp,
        timestamp_ms=entry.kafka_timestamp_ms,
        headers=headers,
    )
    try:
        result = take_in([record], source="requeue")
    except Exception as exc:
        if is_outage(exc):
            raise
        # Still unprocessable (say, what broke it is not fixed yet); the entry stays OPEN.
        raise RequeueRefused(f"the record still cannot be taken in ({type(exc).__name__})") from None
    if result.dead_lettered.get(PROCESSING_ID_CONFLICT):
        raise RequeueRefused(
            f"the record is still refused: {PROCESSING_ID_CONFLICT} (its processing_id "
            f"{entry.processing_id} belongs to another business's message)"
        )
    if result.dead_lettered:
        raise RequeueRefused(f"the record is still refused: {', '.join(result.dead_lettered)}")
    runs, traces = result.new, result.traces
    if runs:
        after_commit(runs[0][0], lambda: hand_off(runs, traces))
    # Taken in behind another message of the customer's, it starts when its turn comes.
    started = runs or result.waiting
    return started[0][1] if started else None


def _inbox_row(processing_id: str) -> ProcessedMessage:
    try:
        return ProcessedMessage.objects.select_for_update().get(processing_id=processing_id)
    except ProcessedMessage.DoesNotExist:
        raise RequeueRefused(
            f"{processing_id} has no inbox row any more (finished rows are purged after "
            "INBOX_RETENTION_DAYS), so its saga cannot be run again"
        ) from None
