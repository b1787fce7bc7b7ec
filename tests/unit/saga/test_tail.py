"""The run's tail in one task (whatsapp.tasks.reply_and_finish): read receipt, reply, finish.
Run eagerly here, on the real test Postgres and Redis, against a local Cloud API: a copy
Redis redelivers, or one killed between the reply and finish, never sends a second reply
nor writes a second finish activity; a reply that fails for good is dead-lettered at stage
"reply" and its requeue sends it again in the same run; the old task names do the same."""

from __future__ import annotations

import pytest

from dlq.models import DeadLetter
from dlq.requeue import requeue
from leads.models import LeadActivity
from tests.support.events import encode, event
from tests.support.runs import acted
from tests.support.statuses import MESSAGES
from whatsapp import saga, tasks
from whatsapp.ingest.intake import take_in
from whatsapp.kafka import Record
from whatsapp.models import OutboundMessage, ProcessedMessage
from whatsapp.pipeline import chains
from whatsapp.send import reply as outbound

pytestmark = pytest.mark.django_db(transaction=True)


def graph_calls(httpserver) -> list[str]:
    bodies = [r.get_json() for r, _ in httpserver.log if r.path == MESSAGES]
    return ["read" if b.get("status") == "read" else "text" for b in bodies]


def finished(pid: str) -> int:
    """The run's "message_processed" activities: one per finished run, never two."""
    return LeadActivity.objects.filter(processing_id=pid, kind="message_processed").count()


def row(pid: str) -> ProcessedMessage:
    return ProcessedMessage.objects.get(processing_id=pid)


def test_a_redelivered_copy_sends_no_second_reply_and_no_second_finish(shop, httpserver):
    acted("tail-1", 1)
    assert tasks.reply_and_finish.apply(args=("tail-1", 1)).get() is None
    again = tasks.reply_and_finish.apply(args=("tail-1", 1)).get()
    assert again == {"stopped": "tail-1 is PROCESSED in run 1, not PROCESSING in run 1"}
    assert graph_calls(httpserver) == ["read", "text"]
    assert OutboundMessage.objects.filter(processing_id="tail-1").count() == 1
    assert row("tail-1").status == ProcessedMessage.Status.PROCESSED and finished("tail-1") == 1


def test_a_copy_killed_after_the_reply_finishes_on_redelivery_without_sending_again(shop, httpserver):
    acted("tail-2", 2)
    assert saga.send_reply("tail-2", 1).done  # the first copy got this far, then was SIGKILLed
    tasks.reply_and_finish.apply(args=("tail-2", 1)).get()
    assert graph_calls(httpserver) == ["text", "read"], "the reply once; marking read again is harmless"
    assert row("tail-2").status == ProcessedMessage.Status.PROCESSED and finished("tail-2") == 1


@pytest.mark.parametrize("name", ["reply_and_finish", "send_reply", "finish"])
def test_a_retry_of_the_reply_does_not_mark_read_again(shop, httpserver, monkeypatch, name):
    """The old names too: their retries carry the same kwargs."""
    acted("tail-3", 3)
    real = outbound.cloud_api.send_text
    tries: list[int] = []

    def fails_once(**kwargs):
        tries.append(1)
        if len(tries) == 1:
            raise outbound.cloud_api.CloudApiRetryable("WhatsApp Cloud API answered 503", title="503")
        return real(**kwargs)

    monkeypatch.setattr(outbound.cloud_api, "send_text", fails_once)
    # Eagerly, Celery runs the retry at once, with the kwargs the task left for it.
    getattr(tasks, name).apply(args=("tail-3", 1)).get()
    assert len(tries) == 2 and graph_calls(httpserver) == ["read", "text"]
    assert row("tail-3").status == ProcessedMessage.Status.PROCESSED and finished("tail-3") == 1


def test_a_reply_failed_for_good_is_dead_lettered_at_reply_and_its_requeue_sends_it_in_the_same_run(
    shop, httpserver, monkeypatch
):
    acted("tail-4", 4)
    real = outbound.cloud_api.send_text

    def refused(**kwargs):
        raise outbound.cloud_api.CloudApiPermanent("(#131026) Message undeliverable", title="undeliverable")

    monkeypatch.setattr(outbound.cloud_api, "send_text", refused)
    result = tasks.reply_and_finish.apply(args=("tail-4", 1))
    assert result.failed() and isinstance(result.result, saga.StageFailed)
    entry = DeadLetter.objects.get(processing_id="tail-4")
    assert (entry.stage, entry.saga_run) == (DeadLetter.Stage.REPLY, 1)
    assert row("tail-4").status == ProcessedMessage.Status.FAILED and finished("tail-4") == 0
    # A redelivered copy of the failed task does nothing more.
    assert "stopped" in tasks.reply_and_finish.apply(args=("tail-4", 1)).get()
    assert DeadLetter.objects.filter(processing_id="tail-4").count() == 1

    monkeypatch.setattr(outbound.cloud_api, "send_text", real)
    requeue(entry.pk, by="ops")
    assert (row("tail-4").status, row("tail-4").saga_run) == (ProcessedMessage.Status.PROCESSING, 1)
    # What the requeue queued (whatsapp.recovery.requeue: chains.reply_signature), run here.
    signature = chains.reply_signature("tail-4", 1)
    assert signature.options["task_id"] == "tail-4:1:reply-finish" and signature.options["queue"] == "whatsapp"
    tasks.reply_and_finish.apply(args=signature.args, kwargs=signature.kwargs).get()
    assert graph_calls(httpserver) == ["read", "text"], "sent in the same run; marked read only the first time"
    assert OutboundMessage.objects.get(processing_id="tail-4").saga_run == 1
    assert row("tail-4").status == ProcessedMessage.Status.PROCESSED and finished("tail-4") == 1


@pytest.mark.parametrize("old", ["send_reply", "finish"])
def test_the_old_task_names_still_do_the_tail_once(shop, httpserver, old):
    """Copies queued under the old names before an upgrade (one release more)."""
    pid = f"tail-old-{old}"
    acted(pid, 5 if old == "send_reply" else 6)
    getattr(tasks, old).apply(args=(pid, 1)).get()
    # The old chain's finish, after the old send_reply (or a second copy): nothing more.
    assert "stopped" in tasks.finish.apply(args=(pid, 1)).get()
    assert graph_calls(httpserver) == ["read", "text"]
    assert row(pid).status == ProcessedMessage.Status.PROCESSED and finished(pid) == 1


def test_the_chain_ends_in_one_tail_task_on_the_reply_queue(shop):
    acted("tail-5", 7)
    message = row("tail-5")
    steps = list(message.saga_steps.filter(saga_run=1).order_by("order"))
    chain = chains.actions_signature("tail-5", 1, steps)
    ids = [(task.task, task.options["task_id"], task.options.get("queue")) for task in chain.tasks]
    assert ids[-1] == ("whatsapp.reply_and_finish", "tail-5:1:reply-finish", "whatsapp")
    assert [name for name, _, _ in ids] == ["whatsapp.execute_action"] * len(steps) + ["whatsapp.reply_and_finish"]


def test_the_sweeper_resumes_from_the_first_action_not_done_then_the_tail(shop):
    take_in([Record("t", 0, 8, encode(event("tail-6")))])
    assert saga.claim("tail-6", 1)
    saga.plan_run("tail-6", 1)
    assert saga.run_step("tail-6", 1, 1).done  # CREATE_ORDER; NOTIFY_SALES not yet
    resumed = chains.resume_signature("tail-6", 1, planned=True)
    assert [task.options["task_id"] for task in resumed.tasks] == [
        "tail-6:1:action2-NOTIFY_SALES",
        "tail-6:1:reply-finish",
    ]
    assert saga.run_step("tail-6", 1, 2).done
    # Every action done, the tail lost: the tail task alone.
    resumed = chains.resume_signature("tail-6", 1, planned=True)
    assert [task.options["task_id"] for task in resumed.tasks] == ["tail-6:1:reply-finish"]
