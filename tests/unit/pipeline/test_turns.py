"""A conversation's turn (whatsapp.pipeline.turns), on the real test Postgres and Redis: which
of a customer's messages runs, which wait, and who starts the next. The pipeline's tasks are
not run here (tests/integration/pipeline/test_ordering.py runs them on real workers): the
rows and the turn say what a worker would be handed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from dlq.models import DeadLetter
from dlq.requeue import requeue
from tests.support.events import encode, event, now_iso
from whatsapp import saga
from whatsapp.ingest.intake import take_in
from whatsapp.kafka import Record
from whatsapp.models import ConversationTurn, ProcessedMessage
from whatsapp.pipeline import turns
from whatsapp.recovery import sweeper

pytestmark = pytest.mark.django_db(transaction=True)


def record(pid: str, offset: int, lead: str, minutes_ago: float, **overrides) -> Record:
    body = event(pid, lead_id=lead, message_id=f"wamid.{pid}", **overrides)
    body["message"]["received_at"] = now_iso(minutes_ago)
    return Record("t", 0, offset, encode(body))


def status(pid: str) -> str:
    return ProcessedMessage.objects.get(processing_id=pid).status


def turn(lead: str) -> ConversationTurn | None:
    return ConversationTurn.objects.filter(lead_id=lead).first()


def finish(pid: str) -> None:
    """Run the message as the workers would, in this process: claim, actions, finish."""
    assert saga.claim(pid, 1)
    for step in saga.plan_run(pid, 1):
        assert saga.run_step(pid, 1, step.order).done
    assert saga.finish_run(pid, 1)


def test_the_earliest_sent_of_a_customers_batch_runs_and_the_rest_wait(shop):
    # Kafka order is not the customer's: the second record was sent first.
    result = take_in(
        [
            record("a-2", 1, "lead-a", minutes_ago=2),
            record("a-1", 2, "lead-a", minutes_ago=3),
            record("a-3", 3, "lead-a", minutes_ago=1),
            record("b-1", 4, "lead-b", minutes_ago=1),
        ]
    )
    assert sorted(pid for pid, _ in result.new) == ["a-1", "b-1"], "one per customer is handed to Celery"
    assert [status(p) for p in ("a-1", "a-2", "a-3", "b-1")] == ["RECEIVED", "WAITING", "WAITING", "RECEIVED"]
    held = turn("lead-a")
    assert (held.processing_id, held.saga_run, held.waiting) == ("a-1", 1, 2)
    assert turn("lead-b").waiting == 0


def test_a_timestamp_tie_goes_by_kafka_offset(shop):
    body = [record(f"t-{n}", 10 - n, "lead-t", minutes_ago=1) for n in range(3)]
    same = body[0].value
    body = [Record("t", 0, 10 - n, same.replace(b'"t-0"', f'"t-{n}"'.encode())) for n in range(3)]
    take_in(body)
    assert turn("lead-t").processing_id == "t-2", "offset 8 is the earliest"


def test_finishing_hands_the_turn_to_the_next_sent_and_the_last_drops_it(shop):
    take_in([record("c-1", 1, "lead-c", 3), record("c-2", 2, "lead-c", 2)])
    take_in([record("c-3", 3, "lead-c", 1)])  # a later batch queues behind too
    assert turn("lead-c").waiting == 2
    finish("c-1")
    assert [status(p) for p in ("c-1", "c-2", "c-3")] == ["PROCESSED", "RECEIVED", "WAITING"]
    assert (turn("lead-c").processing_id, turn("lead-c").waiting) == ("c-2", 1)
    finish("c-2")
    finish("c-3")
    assert turn("lead-c") is None, "nothing waits: the finish's own statement dropped the turn"


def test_a_message_of_a_customer_whose_turn_is_free_runs_at_once(shop):
    take_in([record("d-1", 1, "lead-d", 2)])
    finish("d-1")
    result = take_in([record("d-2", 2, "lead-d", 1)])
    assert result.new == [("d-2", 1)] and status("d-2") == "RECEIVED"


def test_a_dead_letter_gives_the_turn_up_and_its_requeue_waits_behind_the_runner(shop):
    take_in([record("e-1", 1, "lead-e", 3), record("e-2", 2, "lead-e", 2), record("e-3", 3, "lead-e", 1)])
    assert saga.claim("e-1", 1)
    saga.fail("e-1", 1, stage="intent", reason="non_retryable", error="PermanentStageError: no", tb="")
    entry = saga.write_dead_letter("e-1", 1)
    assert entry is not None and status("e-1") == "FAILED"
    assert turn("lead-e").processing_id == "e-2" and status("e-2") == "RECEIVED"

    requeue(entry.pk, by="tests")  # e-2 still runs: the requeued run waits, and goes next (sent first)
    assert status("e-1") == "WAITING"
    assert ProcessedMessage.objects.get(processing_id="e-1").saga_run == 2
    finish("e-2")
    assert turn("lead-e").processing_id == "e-1" and turn("lead-e").saga_run == 2
    assert status("e-1") == "RECEIVED" and status("e-3") == "WAITING"


def test_only_the_holder_passes_the_turn_on(shop):
    take_in([record("f-1", 1, "lead-f", 2), record("f-2", 2, "lead-f", 1)])
    assert turns.pass_on(shop.business_id, "lead-f", "f-2", 1) is None
    assert turns.pass_on(shop.business_id, "lead-f", "f-1", 2) is None, "another run of the holder"
    assert status("f-2") == "WAITING" and turn("lead-f").processing_id == "f-1"


def test_the_sweeper_starts_a_conversation_whose_holder_ended_without_passing_it(shop):
    take_in([record("g-1", 1, "lead-g", 2), record("g-2", 2, "lead-g", 1)])
    # The worker died between the holder's finish and its hand-over.
    ProcessedMessage.objects.filter(processing_id="g-1").update(status="PROCESSED", finished_at=timezone.now())
    later = timezone.now() + timedelta(seconds=120)
    result = sweeper.sweep(stuck_after=60, purge=False, now=later)
    assert result.redriven.get("waiting started") == 1
    assert status("g-2") == "RECEIVED" and turn("lead-g").processing_id == "g-2"
    assert sweeper.sweep(stuck_after=60, purge=False, now=later).redriven.get("waiting started") is None


def test_a_message_waiting_behind_a_live_one_is_left_to_it(shop):
    take_in([record("h-1", 1, "lead-h", 2), record("h-2", 2, "lead-h", 1)])
    later = timezone.now() + timedelta(seconds=120)
    assert sweeper.sweep(stuck_after=60, purge=False, now=later).redriven.get("waiting started") is None
    assert status("h-2") == "WAITING"


def test_the_waiting_rows_are_found_by_their_index(shop):
    with connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN SELECT id FROM whatsapp_processedmessage WHERE business_id = 'x' AND lead_id = 'y' "
            "AND status = 'WAITING' ORDER BY sent_at, kafka_offset LIMIT 1"
        )
        plan = " ".join(row[0] for row in cursor.fetchall())
    assert "inbox_waiting" in plan


def test_a_requeued_reply_waits_and_then_sends_only_the_reply(shop):
    take_in([record("r-1", 1, "lead-r", 3)])
    assert saga.claim("r-1", 1)
    for step in saga.plan_run("r-1", 1):
        assert saga.run_step("r-1", 1, step.order).done
    saga.fail("r-1", 1, stage="reply", reason="non_retryable", error="CloudApiError: no", tb="")
    entry = saga.write_dead_letter("r-1", 1)
    take_in([record("r-2", 2, "lead-r", 1)])
    assert status("r-2") == "RECEIVED"
    requeue(entry.pk, by="tests")
    assert status("r-1") == "WAITING" and DeadLetter.objects.get(pk=entry.pk).status == "REQUEUED"
    finish("r-2")
    assert status("r-1") == "PROCESSING", "its actions stand: only the tail is sent"
    assert turn("lead-r").processing_id == "r-1"
