"""Applying delivery statuses to the replies they name (whatsapp.saga.statuses), called
directly on the real test Postgres and Redis with a local server playing the Cloud API (no
Celery worker): what an operator would look at afterwards (the reply's row and its times,
the dead letter, the lead's review flag). Through real workers:
tests/integration/test_delivery_statuses.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dlq.models import DeadLetter
from dlq.requeue import requeue
from leads.models import Lead, LeadActivity, ReviewFlag
from tests.support.statuses import MESSAGES, apply_all, failed, meta_status, metric, replied, seconds, store
from whatsapp import saga
from whatsapp.models import DeliveryStatus, ProcessedMessage
from whatsapp.saga import statuses as saga_statuses

pytestmark = pytest.mark.django_db(transaction=True)


def test_statuses_out_of_order_end_in_order_of_meaning_with_every_time_recorded(shop):
    reply = replied("order-1")
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    # Meta promises no order: read arrives first, then delivered, then sent.
    ids = store(
        meta_status(reply.wamid, "read", t0 + timedelta(seconds=30)),
        meta_status(reply.wamid, "delivered", t0 + timedelta(seconds=10)),
        meta_status(reply.wamid, "sent", t0),
    )
    assert apply_all(ids) == ["applied", "stale", "stale"]
    reply.refresh_from_db()
    assert reply.delivery_status == "read" and reply.status == "SENT"
    assert reply.read_at == seconds(t0 + timedelta(seconds=30))
    assert reply.delivered_at == seconds(t0 + timedelta(seconds=10))
    assert reply.sent_at == seconds(t0)


def test_sent_delivered_read_in_order_are_each_applied(shop):
    reply = replied("order-2")
    t0 = datetime.now(UTC) - timedelta(minutes=2)
    for offset, status in enumerate(("sent", "delivered", "read")):
        [i] = store(meta_status(reply.wamid, status, t0 + timedelta(seconds=offset)))
        assert saga_statuses.apply(i) == "applied"
        reply.refresh_from_db()
        assert reply.delivery_status == status
    assert (reply.sent_at, reply.delivered_at, reply.read_at) == tuple(
        seconds(t0 + timedelta(seconds=n)) for n in range(3)
    )
    assert DeliveryStatus.objects.filter(wamid=reply.wamid, outcome="applied").count() == 3


def test_a_failed_delivery_is_dead_lettered_and_requeueing_sends_the_reply_again(shop, httpserver):
    reply = replied("order-4")
    before = metric("failed", "applied")
    [i] = store(failed(reply.wamid, datetime.now(UTC), 131026, "Message undeliverable"))
    assert saga_statuses.apply(i) == "applied"

    reply.refresh_from_db()
    assert (reply.status, reply.delivery_status) == ("FAILED", "failed")
    assert (reply.error_code, reply.error_title) == (131026, "Message undeliverable")
    assert reply.failed_at is not None
    entry = DeadLetter.objects.get(processing_id="order-4")
    assert (entry.stage, entry.reason, entry.status) == ("reply", "delivery_failed", "OPEN")
    assert "131026" in entry.error_message and reply.wamid in entry.error_message
    assert entry.error_message.endswith("Message undeliverable - Message undeliverable.")
    assert ProcessedMessage.objects.get(processing_id="order-4").status == "FAILED"
    assert metric("failed", "applied") == before + 1
    assert saga_statuses.apply(i) == "applied"  # a redelivered task writes no second entry
    assert DeadLetter.objects.filter(processing_id="order-4").count() == 1

    requeue(entry.pk, by="ops")  # sends the reply task on commit; here the stage runs by hand
    assert saga.send_reply("order-4", 1).done
    assert saga.send_reply("order-4", 1).done  # a Celery redelivery of the same task sends nothing
    assert saga.finish_run("order-4", 1)
    texts = [r for r, _ in httpserver.log if r.path == MESSAGES and r.get_json().get("type") == "text"]
    assert len(texts) == 2, "sent once, and once more after the requeue"
    reply.refresh_from_db()
    assert (reply.status, reply.wamid, reply.delivery_status, reply.failed_at) == ("SENT", "wamid.order-4.2", "", None)
    # The new message's own statuses apply to it.
    [j] = store(meta_status(reply.wamid, "delivered", datetime.now(UTC)))
    assert saga_statuses.apply(j) == "applied"


def test_131047_flags_the_lead_for_review(shop):
    reply = replied("order-5")
    title = "Re-engagement message"
    [i] = store(failed(reply.wamid, datetime.now(UTC), 131047, title))
    saga_statuses.apply(i)
    lead = Lead.objects.get(aliases__alias="lead-123")
    assert lead.needs_review
    flag = ReviewFlag.objects.get(lead=lead, reason="reengagement_needed")
    assert flag.status == "OPEN" and flag.detail["error_code"] == 131047
    activity = LeadActivity.objects.get(lead=lead, kind="flagged_for_review")
    assert activity.processing_id == "order-5" and activity.detail["reason"] == "reengagement_needed"
    assert DeadLetter.objects.get(processing_id="order-5").reason == "delivery_failed"


def test_131050_records_the_marketing_stop_and_dead_letters_nothing(shop):
    reply = replied("order-6")
    [i] = store(failed(reply.wamid, datetime.now(UTC), 131050, "Unable to deliver the message"))
    assert saga_statuses.apply(i) == "applied"
    lead = Lead.objects.get(aliases__alias="lead-123")
    assert lead.marketing_stopped_at is not None and not lead.needs_review
    activity = LeadActivity.objects.get(lead=lead, kind="marketing_stopped")
    assert activity.processing_id == "order-6" and activity.detail == {"source": "delivery_status_131050"}
    assert not DeadLetter.objects.exists(), "the customer's choice is not a failure to requeue"
    assert ProcessedMessage.objects.get(processing_id="order-6").status == "PROCESSED"


def test_a_failure_after_read_changes_nothing_and_read_after_failure_wins(shop):
    reply = replied("order-6")
    now = datetime.now(UTC)
    assert apply_all(store(meta_status(reply.wamid, "read", now))) == ["applied"]
    assert apply_all(store(failed(reply.wamid, now, 131026, "Message undeliverable"))) == ["stale"]
    reply.refresh_from_db()
    assert (reply.status, reply.delivery_status, reply.error_code) == ("SENT", "read", None)
    assert reply.failed_at is not None  # its time is kept all the same
    assert not DeadLetter.objects.filter(processing_id="order-6").exists()

    other = replied("order-7")
    assert apply_all(store(failed(other.wamid, now, 131026, "Message undeliverable"))) == ["applied"]
    assert apply_all(store(meta_status(other.wamid, "delivered", now))) == ["stale"]
    assert apply_all(store(meta_status(other.wamid, "read", now))) == ["applied"]
    other.refresh_from_db()
    # The customer has it: a requeue of the dead letter would find the reply SENT and send nothing.
    assert (other.status, other.delivery_status) == ("SENT", "read")


def test_an_unknown_wamid_is_looked_at_again_then_counted_not_failed(shop):
    before = metric("delivered", "unknown")
    [i] = store(meta_status("wamid.nobody", "delivered", datetime.now(UTC)))
    assert saga_statuses.apply(i, attempt=0) is None, "tried again later: the send may not have stored its wamid yet"
    assert saga_statuses.apply(i, attempt=len(saga_statuses.UNKNOWN_RETRY_DELAYS)) == "unknown"
    assert DeliveryStatus.objects.get(pk=i).outcome == "unknown"
    assert metric("delivered", "unknown") == before + 1
    assert saga_statuses.apply(i, attempt=0) == "unknown"  # settled: never again


def test_applying_a_status_is_three_statements(shop):
    reply = replied("order-8")
    [i] = store(meta_status(reply.wamid, "delivered", datetime.now(UTC)))
    with CaptureQueriesContext(connection) as queries:
        saga_statuses.apply(i)
    statements = [q["sql"] for q in queries.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    assert len(statements) == 3, statements  # read the status, update the reply, settle the status
