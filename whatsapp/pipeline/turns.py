"""One customer's messages run in order: the conversation's turn, kept in Postgres.

A conversation is a business and the producer's lead id (one customer). Its messages run
their pipelines one at a time, in the order the customer sent them (Meta's timestamp, then
the Kafka offset for ties), while other conversations run in parallel as before. No lock is
held while a message runs, and no worker waits: the message that holds the turn
(whatsapp.models.ConversationTurn) runs; the others wait as inbox rows in WAITING, and the
holder's finish or dead letter hands the turn to the earliest of them and starts it.

- take: the rows ingest, requeue and replay are about to hand to Celery ask for their turn;
  the ones that get it are handed on, the rest are marked WAITING;
- pass_on: the holder is done (processed or dead-lettered), the next one starts;
- repair: for the sweeper, a conversation whose waiting messages have no live holder (a
  worker died between a finish and its pass_on, a hand-off the broker refused).

A dead-lettered message gives its turn up like a finished one, so it never holds its
customer's later messages; requeued, it queues again behind whatever then holds the turn,
and runs in its place by the order rule (its own timestamp goes first among those waiting).

Written as SQL because take runs once per ingest batch and pass_on once per message: one
statement each, where the ORM would take a query per conversation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from whatsapp.models import ProcessedMessage
from whatsapp.pipeline.chains import reply_signature
from whatsapp.pipeline.hand_off import hand_off

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A run about to be handed to Celery, asking for its conversation's turn."""

    business_id: str
    lead_id: str
    processing_id: str
    saga_run: int
    sent_at: datetime | None
    kafka_offset: int | None


# The first of each conversation's candidates (by sent_at, then offset) takes the turn where
# nobody holds it; where somebody does, every candidate queues behind, raising `waiting`
# under the turn's lock (the holder's finish waits for it: InboxQuerySet.finish_run). A new
# run of the message already holding the turn takes it over. The candidates left without
# the turn are marked WAITING in the same statement; their processing_ids are returned.
_TAKE = """
WITH batch AS (
    SELECT * FROM jsonb_to_recordset(%(batch)s::jsonb)
        AS b(business_id text, lead_id text, processing_id text, saga_run int, sent_at timestamptz, kafka_offset bigint)
), firsts AS (
    SELECT DISTINCT ON (business_id, lead_id) business_id, lead_id, processing_id, saga_run,
           count(*) OVER (PARTITION BY business_id, lead_id) - 1 AS others
    FROM batch
    ORDER BY business_id, lead_id, sent_at NULLS LAST, kafka_offset NULLS LAST, processing_id
), turns AS (
    INSERT INTO whatsapp_conversationturn AS t (business_id, lead_id, processing_id, saga_run, waiting, taken_at)
    SELECT business_id, lead_id, processing_id, saga_run, others, %(now)s FROM firsts
    ORDER BY business_id, lead_id
    ON CONFLICT (business_id, lead_id) DO UPDATE SET
        waiting = t.waiting + excluded.waiting + (CASE WHEN t.processing_id = excluded.processing_id THEN 0 ELSE 1 END),
        saga_run = CASE WHEN t.processing_id = excluded.processing_id THEN excluded.saga_run ELSE t.saga_run END
    RETURNING t.processing_id, t.saga_run
)
UPDATE whatsapp_processedmessage m SET status = 'WAITING', updated_at = %(now)s
FROM batch b
WHERE m.processing_id = b.processing_id
  AND NOT EXISTS (SELECT 1 FROM turns WHERE turns.processing_id = b.processing_id AND turns.saga_run = b.saga_run)
RETURNING m.processing_id
"""

# The conversation's next message, taken out of WAITING (RECEIVED to start its pipeline, or
# PROCESSING when its run's plan is written: a requeued reply, only the reply goes again), and
# the turn made its, or dropped when none waits; one statement. `waiting` is counted afresh
# (the partial index inbox_waiting): the statement still sees the next one as WAITING.
_NEXT = """
WITH next AS (
    SELECT id FROM whatsapp_processedmessage
    WHERE business_id = %(business)s AND lead_id = %(lead)s AND status = 'WAITING'
    ORDER BY sent_at NULLS LAST, kafka_offset NULLS LAST, id
    LIMIT 1
    FOR UPDATE
), started AS (
    UPDATE whatsapp_processedmessage m
    SET status = CASE WHEN m.planned_run = m.saga_run THEN 'PROCESSING' ELSE 'RECEIVED' END, updated_at = %(now)s
    FROM next WHERE m.id = next.id
    RETURNING m.processing_id, m.saga_run, m.status, m.business_id, m.trace_id
), given AS (
    INSERT INTO whatsapp_conversationturn AS t (business_id, lead_id, processing_id, saga_run, waiting, taken_at)
    SELECT %(business)s, %(lead)s, started.processing_id, started.saga_run,
           (SELECT count(*) - 1 FROM whatsapp_processedmessage
            WHERE business_id = %(business)s AND lead_id = %(lead)s AND status = 'WAITING'), %(now)s
    FROM started
    ON CONFLICT (business_id, lead_id) DO UPDATE SET
        processing_id = excluded.processing_id, saga_run = excluded.saga_run,
        waiting = excluded.waiting, taken_at = excluded.taken_at
    RETURNING t.id
), dropped AS (
    DELETE FROM whatsapp_conversationturn
    WHERE business_id = %(business)s AND lead_id = %(lead)s AND NOT EXISTS (SELECT 1 FROM started)
    RETURNING id
)
SELECT processing_id, saga_run, status, business_id, trace_id FROM started
"""


def take(candidates: Iterable[Candidate]) -> set[str]:
    """Ask for the turn of each candidate's conversation, inside the caller's transaction
    (the one that makes the rows ready to run); the processing_ids of those that must wait,
    now WAITING, which the caller does not hand on."""
    batch = [
        {
            "business_id": c.business_id,
            "lead_id": c.lead_id,
            "processing_id": c.processing_id,
            "saga_run": c.saga_run,
            "sent_at": c.sent_at.isoformat() if c.sent_at is not None else None,
            "kafka_offset": c.kafka_offset,
        }
        for c in candidates
    ]
    if not batch:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(_TAKE, {"batch": json.dumps(batch), "now": timezone.now()})
        return {row[0] for row in cursor.fetchall()}


def candidate(message: ProcessedMessage) -> Candidate:
    """A stored row as a candidate (a requeue, a replay's new run)."""
    return Candidate(
        message.business_id,
        message.lead_id,
        message.processing_id,
        message.saga_run,
        message.sent_at,
        message.kafka_offset,
    )


def may_run(message: ProcessedMessage) -> bool:
    """Ask for the turn of one row the caller holds locked and has made ready to run; False
    when it must wait (it is WAITING now, in the database and on `message`)."""
    if message.processing_id in take([candidate(message)]):
        message.status = ProcessedMessage.Status.WAITING
        return False
    return True


def pass_on(business_id: str, lead_id: str, processing_id: str, saga_run: int) -> str | None:
    """The run holding its conversation's turn is over (processed or dead-lettered): give
    the turn to the conversation's next waiting message and start it once committed, or
    drop the turn if none waits. Nothing when this run does not hold the turn (a copy of
    the task run twice, a row taken in before turns existed). The next one's processing_id."""
    return _give(business_id, lead_id, holder=(processing_id, saga_run))


def repair(business_id: str, lead_id: str) -> str | None:
    """For the sweeper: give the conversation's turn to its next waiting message when no live
    run holds it (its holder finished without passing it on, or is gone)."""
    return _give(business_id, lead_id, holder=None)


def stalled(before: datetime, limit: int) -> list[tuple[str, str]]:
    """Conversations with a message WAITING since before `before` and no live run holding
    their turn (the partial index inbox_waiting finds the waiting rows)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT DISTINCT w.business_id, w.lead_id FROM whatsapp_processedmessage w
            WHERE w.status = 'WAITING' AND w.updated_at < %s
              AND NOT EXISTS (
                  SELECT 1 FROM whatsapp_conversationturn t
                  JOIN whatsapp_processedmessage h ON h.processing_id = t.processing_id AND h.saga_run = t.saga_run
                  WHERE t.business_id = w.business_id AND t.lead_id = w.lead_id
                    AND h.status IN ('RECEIVED', 'PROCESSING'))
            LIMIT %s
            """,
            [before, limit],
        )
        return [(row[0], row[1]) for row in cursor.fetchall()]


def _give(business_id: str, lead_id: str, *, holder: tuple[str, int] | None) -> str | None:
    now = timezone.now()
    key: dict[str, Any] = {"business": business_id, "lead": lead_id, "now": now}
    with transaction.atomic(), connection.cursor() as cursor:
        # The turn's lock first, in a statement of its own: once it is ours, every message
        # queued behind it is committed, so the next statement sees them all.
        cursor.execute(
            "SELECT processing_id, saga_run FROM whatsapp_conversationturn "
            "WHERE business_id = %(business)s AND lead_id = %(lead)s FOR UPDATE",
            key,
        )
        turn = cursor.fetchone()
        if holder is not None and (turn is None or tuple(turn) != holder):
            return None
        if holder is None and turn is not None and _alive(turn[0], turn[1]):
            return None
        cursor.execute(_NEXT, key)
        started = cursor.fetchone()
        if started is None:
            return None
        pid, run, status, business, trace_id = started
        transaction.on_commit(lambda: _start(pid, run, status, business, trace_id))
    return pid


def _alive(processing_id: str, saga_run: int) -> bool:
    """Whether the turn's holder is still a run that will finish (and pass the turn on)."""
    return ProcessedMessage.objects.filter(
        processing_id=processing_id,
        saga_run=saga_run,
        status__in=[ProcessedMessage.Status.RECEIVED, ProcessedMessage.Status.PROCESSING],
    ).exists()


def _start(processing_id: str, saga_run: int, status: str, business_id: str, trace_id: str) -> None:
    """Hand the conversation's next message to Celery. Should the broker refuse, the row waits
    in RECEIVED (or PROCESSING), holding the turn, and the sweeper starts it again after
    SWEEP_STUCK_AFTER_SECONDS: logged, never raised into the task that finished the last one."""
    try:
        if status == ProcessedMessage.Status.PROCESSING:
            reply_signature(processing_id, saga_run).apply_async()
        else:
            hand_off([(processing_id, saga_run)], known={processing_id: (business_id, trace_id)})
    except Exception as exc:
        log.warning(
            "turns: %s run %s has its conversation's turn but the broker refused it (%s); the sweeper starts it "
            "again after SWEEP_STUCK_AFTER_SECONDS",
            processing_id,
            saga_run,
            type(exc).__name__,
        )
