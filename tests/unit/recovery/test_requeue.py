"""Requeueing a dead letter, called directly (dlq/requeue.py through the whatsapp handler,
whatsapp/recovery/requeue.py) on the real test Postgres and Redis, with no Celery worker: what an
operator sees afterwards is the entry REQUEUED (or OPEN with the reason it was refused),
the inbox row ready for its next run, and the message's first task on the broker.
A requeued message carried through by a real worker: tests/integration/test_pipeline.py."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from dlq.models import DeadLetter
from dlq.requeue import RequeueRefused, requeue, requeue_many
from leads.models import Business, Order
from tests.support.events import BUSINESS_ID, TENANT_ID, encode, event
from whatsapp import saga
from whatsapp.ingest.intake import take_in
from whatsapp.kafka import Record
from whatsapp.models import ProcessedMessage

pytestmark = pytest.mark.django_db(transaction=True)


def queued_messages(redis_client) -> list[dict]:
    """The task messages waiting on the broker, on any queue."""
    return [
        json.loads(message)
        for key in redis_client.keys("*")
        if redis_client.type(key) == b"list"
        for message in redis_client.lrange(key, 0, -1)
    ]


def queued_task_ids(redis_client) -> list[str]:
    """The ids of the task messages waiting on the broker, on any queue."""
    return [message["headers"]["id"] for message in queued_messages(redis_client)]


def row(pid: str) -> ProcessedMessage:
    return ProcessedMessage.objects.get(processing_id=pid)


def failed_run(pid: str, stage: str = "CREATE_ORDER") -> DeadLetter:
    """A message whose first run created its order, then failed and was dead-lettered: at an
    action (the order compensated), or at the reply (the order stands)."""
    take_in([Record("t", 0, 0, encode(event(pid)))])
    assert saga.claim(pid, 1)
    saga.plan_run(pid, 1)
    assert saga.run_step(pid, 1, 1).done
    assert saga.fail(pid, 1, stage=stage, reason=DeadLetter.Reason.NON_RETRYABLE, error="boom", tb="")
    if stage != DeadLetter.Stage.REPLY:
        assert saga.compensate_steps(pid, 1)
    entry = saga.write_dead_letter(pid, 1)
    assert entry is not None
    return entry


# --- refused: the entry stays OPEN and says why ---------------------------------


def test_only_an_open_entry_is_requeued(business, redis_client):
    entry = failed_run("closed-1")
    entry.resolve("entered in the CRM by hand", by="ops")
    with pytest.raises(RequeueRefused, match=r"is RESOLVED, only OPEN entries can be requeued"):
        requeue(entry.pk, by="ops")
    assert row("closed-1").saga_run == 1
    assert queued_task_ids(redis_client) == []


def test_a_message_whose_run_has_not_ended_is_refused(business, redis_client):
    entry = failed_run("busy-1")
    ProcessedMessage.objects.filter(processing_id="busy-1").update(status=ProcessedMessage.Status.PROCESSING)
    with pytest.raises(RequeueRefused, match="is PROCESSING; wait until its run has ended"):
        requeue(entry.pk, by="ops")
    entry.refresh_from_db()
    assert (entry.status, entry.requeue_count) == (DeadLetter.Status.OPEN, 0)
    assert queued_task_ids(redis_client) == []


def test_a_purged_message_is_refused(business):
    entry = failed_run("purged-1")
    ProcessedMessage.objects.filter(processing_id="purged-1").delete()
    with pytest.raises(RequeueRefused, match="has no inbox row any more"):
        requeue(entry.pk, by="ops")
    entry.refresh_from_db()
    assert entry.status == DeadLetter.Status.OPEN


def test_a_failed_reply_whose_message_moved_on_is_refused(business):
    entry = failed_run("moved-1", stage=DeadLetter.Stage.REPLY)
    row("moved-1").start_new_run()  # say, a forced replay since
    with pytest.raises(RequeueRefused, match="has moved on since this entry"):
        requeue(entry.pk, by="ops")
    entry.refresh_from_db()
    assert entry.status == DeadLetter.Status.OPEN
    assert row("moved-1").status == ProcessedMessage.Status.RECEIVED, "left as the replay left it"


def test_an_ingest_entry_that_is_still_invalid_or_refused_stays_open(business):
    take_in([Record("t", 0, 1, b"not json {"), Record("t", 0, 2, encode(event("nobody-1", business_id="no-such")))])
    invalid, unknown = DeadLetter.objects.order_by("kafka_offset")
    with pytest.raises(RequeueRefused, match="the record is still invalid"):
        requeue(invalid.pk, by="ops")
    with pytest.raises(RequeueRefused, match="still refused: unknown_business"):
        requeue(unknown.pk, by="ops")
    assert set(DeadLetter.objects.values_list("status", flat=True)) == {DeadLetter.Status.OPEN}
    assert not ProcessedMessage.objects.exists()


# --- requeued: the message goes through again -----------------------------------


def test_an_ingest_entry_is_taken_in_once_what_refused_it_is_fixed(redis_client, transactional_db):
    take_in([Record("t", 0, 5, encode(event("late-biz-1")), key=b"lead-123")])
    entry = DeadLetter.objects.get()
    assert (entry.stage, entry.reason) == (DeadLetter.Stage.INGEST, "unknown_business")
    Business.objects.create(business_id=BUSINESS_ID, tenant_id=TENANT_ID, display_name="Acme Bakery")

    requeue(entry.pk, by="ops@example.com")
    entry.refresh_from_db()
    assert entry.status == DeadLetter.Status.REQUEUED
    assert entry.requeue_history[-1]["by"] == "ops@example.com" and entry.requeue_history[-1]["saga_run"] == 1
    message = row("late-biz-1")
    assert (message.status, message.saga_run) == (ProcessedMessage.Status.RECEIVED, 1)
    assert (message.kafka_topic, message.kafka_offset) == ("t", 5)
    assert queued_task_ids(redis_client) == ["late-biz-1:1:dedupe"]


def test_a_failed_run_is_requeued_as_a_new_run_that_acts_again_once(business, redis_client):
    entry = failed_run("again-1")
    assert Order.objects.get(processing_id="again-1").status == Order.Status.CANCELLED

    requeue(entry.pk, by="ops")
    entry.refresh_from_db()
    assert entry.status == DeadLetter.Status.REQUEUED and entry.requeue_history[-1]["saga_run"] == 2
    message = row("again-1")
    assert (message.status, message.saga_run) == (ProcessedMessage.Status.RECEIVED, 2)
    assert (message.failed_stage, message.last_error, message.finished_at) == ("", "", None)
    assert queued_task_ids(redis_client) == ["again-1:2:dedupe"]

    # The new run's order is made again, once; the first run's stays cancelled.
    assert saga.claim("again-1", 2)
    saga.plan_run("again-1", 2)
    assert saga.run_step("again-1", 2, 1).done and saga.run_step("again-1", 2, 1).done
    assert sorted(Order.objects.filter(processing_id="again-1").values_list("saga_run", "status")) == [
        (1, Order.Status.CANCELLED),
        (2, Order.Status.CREATED),
    ]


def test_a_broker_lost_after_the_commit_leaves_the_requeue_to_the_sweeper(business, redis_client, monkeypatch, caplog):
    """The broker answered the check, then failed the hand-off that follows the commit: the
    requeue stands with its history, nothing raises, the warning says what happens next,
    and the sweeper sends the new run once the broker is back."""
    import redis

    from whatsapp.recovery import requeue as handler
    from whatsapp.recovery.sweeper import sweep

    entry = failed_run("lost-1")

    def broker_gone(*args, **kwargs):
        raise redis.ConnectionError("Error 111 connecting to the broker")

    monkeypatch.setattr(handler, "hand_off", broker_gone)
    with caplog.at_level("WARNING", logger=handler.__name__):
        requeue(entry.pk, by="ops")
    entry.refresh_from_db()
    assert entry.status == DeadLetter.Status.REQUEUED and entry.requeue_history[-1]["by"] == "ops"
    assert (row("lost-1").status, row("lost-1").saga_run) == (ProcessedMessage.Status.RECEIVED, 2)
    assert queued_task_ids(redis_client) == []
    assert any("the sweeper starts it again" in r.getMessage() and "lost-1" in r.getMessage() for r in caplog.records)

    monkeypatch.undo()
    sweep(stuck_after=0, purge=False, now=timezone.now() + timedelta(seconds=1))
    assert queued_task_ids(redis_client) == ["lost-1:2:dedupe"]


def test_a_failed_reply_is_sent_again_in_the_same_run(business, redis_client):
    entry = failed_run("reply-again-1", stage=DeadLetter.Stage.REPLY)
    requeue(entry.pk, by="ops")
    message = row("reply-again-1")
    assert (message.status, message.saga_run, message.failed_stage) == (ProcessedMessage.Status.PROCESSING, 1, "")
    # The run's tail, in the same run: the reply then finish, without marking read again.
    assert queued_task_ids(redis_client) == ["reply-again-1:1:reply-finish"]
    [message] = queued_messages(redis_client)
    assert message["headers"]["task"] == "whatsapp.reply_and_finish"
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == (["reply-again-1", 1], {"mark_read": False})


def test_a_bulk_requeue_goes_on_past_a_refused_entry(business, redis_client):
    refused, requeued = failed_run("bulk-1"), failed_run("bulk-2")
    refused.discard("a test message", by="ops")
    seen: list[tuple[int, str | None]] = []
    report = requeue_many(
        [refused.pk, requeued.pk, 999_999],
        by="ops",
        rate=1000,
        on_each=lambda pk, entry, refusal: seen.append((pk, refusal)),
    )
    assert [e.pk for e in report.requeued] == [requeued.pk]
    assert [pk for pk, _ in report.refused] == [refused.pk, 999_999]
    assert "only OPEN entries" in report.refused[0][1] and "does not exist" in report.refused[1][1]
    assert [pk for pk, _ in seen] == [refused.pk, requeued.pk, 999_999]
    assert queued_task_ids(redis_client) == ["bulk-2:2:dedupe"]


# --- the handler setting: the DLQ requeues through whatever it names ------------

calls: list[int] = []


def record_handler(entry: DeadLetter) -> int:
    """A handler another app could provide: it only notes the entry."""
    calls.append(entry.pk)
    return 7


def refusing_handler(entry: DeadLetter) -> int:
    raise RequeueRefused("not today")


def test_the_dlq_requeues_through_the_handler_the_setting_names(business, redis_client):
    entry = failed_run("handler-1")
    calls.clear()
    with override_settings(DLQ_REQUEUE_HANDLER=f"{__name__}.record_handler"):
        requeue(entry.pk, by="ops")
    assert calls == [entry.pk]
    entry.refresh_from_db()
    assert entry.status == DeadLetter.Status.REQUEUED and entry.requeue_history[-1]["saga_run"] == 7
    assert row("handler-1").saga_run == 1, "whatsapp's handler was not called"
    assert queued_task_ids(redis_client) == []


def test_a_handlers_refusal_leaves_the_entry_open(business):
    entry = failed_run("handler-2")
    with (
        override_settings(DLQ_REQUEUE_HANDLER=f"{__name__}.refusing_handler"),
        pytest.raises(RequeueRefused, match="not today"),
    ):
        requeue(entry.pk, by="ops")
    entry.refresh_from_db()
    assert (entry.status, entry.requeue_count) == (DeadLetter.Status.OPEN, 0)
