"""Delivery statuses back from Meta and read receipts, called directly on the real test
Postgres and Redis with a local server playing the Cloud API (no Celery worker): what an
operator would look at afterwards (the reply's row and its times, the dead letter, the
lead's review flag). Through real workers: tests/integration/test_delivery_statuses.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from werkzeug import Response

from core.clients import cloud_api
from core.metrics import counters
from dlq.models import DeadLetter
from dlq.requeue import requeue
from leads.models import Lead, LeadActivity, ReviewFlag
from tests.support.events import encode, event
from whatsapp import saga
from whatsapp.edge import statuses as edge_statuses
from whatsapp.ingest.intake import take_in
from whatsapp.kafka import Record
from whatsapp.models import DeliveryStatus, OutboundMessage, ProcessedMessage
from whatsapp.recovery import sweeper
from whatsapp.saga import statuses as saga_statuses
from whatsapp.send import read_receipts

pytestmark = pytest.mark.django_db(transaction=True)

PHONE_NUMBER_ID = "106540352242922"
TOKEN = "EAAG-delivery-test-token"
MESSAGES = f"/v21.0/{PHONE_NUMBER_ID}/messages"


@pytest.fixture
def shop(business, httpserver, settings):
    """The business with a WhatsApp number served by the local Cloud API, and a Cloud API
    that gives each text message the next wamid (wamid.<pid>.1, .2, ...) and answers read
    receipts as Meta does."""
    business.phone_number_id = PHONE_NUMBER_ID
    business.sales_webhook_url = httpserver.url_for("/sales")
    business.save()
    settings.WHATSAPP_GRAPH_BASE_URL = httpserver.url_for("").rstrip("/")
    settings.WHATSAPP_GRAPH_VERSION = "v21.0"
    settings.WHATSAPP_ACCESS_TOKEN = TOKEN
    sent: dict[str, int] = {}

    def graph(request):
        body = request.get_json()
        if body.get("status") == "read":
            return Response('{"success": true}', status=200, content_type="application/json")
        pid = body["biz_opaque_callback_data"]
        sent[pid] = sent.get(pid, 0) + 1
        return Response(
            f'{{"messaging_product": "whatsapp", "messages": [{{"id": "wamid.{pid}.{sent[pid]}"}}]}}',
            status=200,
            content_type="application/json",
        )

    httpserver.expect_request(MESSAGES, method="POST").respond_with_handler(graph)
    httpserver.expect_request("/sales", method="POST").respond_with_json({})
    return business


def replied(pid: str) -> OutboundMessage:
    """An order message run to its end, as a worker would: its reply sent, its run finished."""
    offset = 100 + int(pid.rsplit("-", 1)[1])
    take_in([Record("t", 0, offset, encode(event(pid, message_id=f"wamid.in-{pid}")))])
    assert saga.claim(pid, 1)
    steps = saga.plan_run(pid, 1)
    for step in steps:
        assert saga.run_step(pid, 1, step.order).done
    assert saga.send_reply(pid, 1).done
    assert saga.finish_run(pid, 1)
    return OutboundMessage.objects.get(processing_id=pid)


def meta_status(wamid: str, status: str, at: datetime, **extra) -> dict:
    """A status object as Meta puts it in value.statuses[]."""
    body = {
        "id": wamid,
        "status": status,
        "timestamp": str(int(at.timestamp())),
        "recipient_id": "15550123456",
        "biz_opaque_callback_data": wamid.split(".")[1],
    }
    if status in ("sent", "delivered"):
        body["conversation"] = {"id": "conv-1", "origin": {"type": "service"}}
        body["pricing"] = {"billable": True, "pricing_model": "PMP", "category": "service"}
    body.update(extra)
    return body


def failed(wamid: str, at: datetime, code: int, title: str) -> dict:
    return meta_status(
        wamid,
        "failed",
        at,
        errors=[{"code": code, "title": title, "message": title, "error_data": {"details": f"{title}."}}],
    )


def store(*statuses: dict) -> list[int]:
    """What the webhook does: store them in its one transaction; the new rows' ids, oldest first."""
    before = set(DeliveryStatus.objects.values_list("pk", flat=True))
    with transaction.atomic():
        edge_statuses.record_statuses(list(statuses), phone_number_id=PHONE_NUMBER_ID)
    return sorted(set(DeliveryStatus.objects.values_list("pk", flat=True)) - before)


def apply_all(ids: list[int]) -> list[str | None]:
    return [saga_statuses.apply(i) for i in ids]


def metric(status: str, outcome: str) -> float:
    return counters.DELIVERY_STATUSES.labels(status, outcome)._value.get()


def queued(redis_client, queue: str) -> list[bytes]:
    """The tasks waiting in a queue, in all of kombu's priority lists (queue, queue\\x06\\x163, ...)."""
    names = [queue, *(f"{queue}\x06\x16{p}" for p in (3, 6, 9))]
    return [task for name in names for task in redis_client.lrange(name, 0, -1)]


def seconds(at: datetime) -> datetime:
    return at.replace(microsecond=0)


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


def test_a_redelivered_status_is_absorbed_and_applying_twice_changes_nothing(shop):
    reply = replied("order-3")
    at = datetime.now(UTC) - timedelta(minutes=1)
    with transaction.atomic():
        delivered = [meta_status(reply.wamid, "delivered", at)]
        assert edge_statuses.record_statuses(delivered, phone_number_id=PHONE_NUMBER_ID)
    with transaction.atomic():
        # Meta sends the same notification again (and twice in one body).
        again = [meta_status(reply.wamid, "delivered", at)] * 2
        assert edge_statuses.record_statuses(again, phone_number_id=PHONE_NUMBER_ID) == 0
    [row] = DeliveryStatus.objects.filter(wamid=reply.wamid)
    assert saga_statuses.apply(row.pk) == "applied"
    assert saga_statuses.apply(row.pk) == "applied"  # a Celery redelivery of the task: already settled
    reply.refresh_from_db()
    assert reply.delivery_status == "delivered" and reply.delivered_at == seconds(at)


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
    lead = Lead.objects.get(lead_id="lead-123")
    assert lead.needs_review
    flag = ReviewFlag.objects.get(lead=lead, reason="reengagement_needed")
    assert flag.status == "OPEN" and flag.detail["error_code"] == 131047
    activity = LeadActivity.objects.get(lead=lead, kind="flagged_for_review")
    assert activity.processing_id == "order-5" and activity.detail["reason"] == "reengagement_needed"
    assert DeadLetter.objects.get(processing_id="order-5").reason == "delivery_failed"


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


def test_statuses_that_are_not_statuses_are_skipped_and_unranked_ones_kept(shop):
    before = metric("other", "invalid")
    with transaction.atomic():
        n = edge_statuses.record_statuses(
            [{"status": "sent"}, "junk", {"id": "wamid.x", "status": "deleted", "timestamp": "soon"}],
            phone_number_id=PHONE_NUMBER_ID,
        )
    assert n == 1 and metric("other", "invalid") == before + 2
    row = DeliveryStatus.objects.get(wamid="wamid.x")
    assert row.occurred_at is None and row.raw["timestamp"] == "soon"
    assert saga_statuses.apply(row.pk) == "ignored"


def test_applying_a_status_is_three_statements(shop):
    reply = replied("order-8")
    [i] = store(meta_status(reply.wamid, "delivered", datetime.now(UTC)))
    with CaptureQueriesContext(connection) as queries:
        saga_statuses.apply(i)
    statements = [q["sql"] for q in queries.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    assert len(statements) == 3, statements  # read the status, update the reply, settle the status


def test_finish_costs_no_more_statements_and_sends_one_read_receipt(shop, redis_client, settings):
    take_in([Record("t", 0, 1, encode(event("order-9", message_id="wamid.in-9")))])
    assert saga.claim("order-9", 1)
    for step in saga.plan_run("order-9", 1):
        saga.run_step("order-9", 1, step.order)
    saga.send_reply("order-9", 1)
    with CaptureQueriesContext(connection) as queries:
        assert saga.finish_run("order-9", 1)
    assert len(queries.captured_queries) == 1
    [task] = queued(redis_client, read_receipts.QUEUE)
    assert b"whatsapp.mark_read" in task and b"wamid.in-9" in task and PHONE_NUMBER_ID.encode() in task


def test_no_read_receipt_when_marking_read_is_off(shop, redis_client, settings):
    settings.WHATSAPP_MARK_READ = False
    take_in([Record("t", 0, 2, encode(event("order-10")))])
    assert saga.claim("order-10", 1)
    for step in saga.plan_run("order-10", 1):
        saga.run_step("order-10", 1, step.order)
    saga.send_reply("order-10", 1)
    assert saga.finish_run("order-10", 1)
    assert queued(redis_client, read_receipts.QUEUE) == []


def test_mark_read_posts_metas_shape_with_the_token_only_in_its_header(shop, httpserver):
    cloud_api.mark_read(phone_number_id=PHONE_NUMBER_ID, message_id="wamid.in-1")
    [(request, _)] = httpserver.log
    assert request.get_json() == {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.in-1"}
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_mark_read_is_retried_a_few_times_then_given_up(business, httpserver, settings, caplog):
    settings.WHATSAPP_GRAPH_BASE_URL = httpserver.url_for("").rstrip("/")
    settings.WHATSAPP_ACCESS_TOKEN = TOKEN
    httpserver.expect_request(MESSAGES, method="POST").respond_with_json(
        {"error": {"message": "An unknown error has occurred.", "code": 1, "fbtrace_id": "X"}}, status=500
    )
    before = counters.MARK_READ.labels("given_up")._value.get()
    waits = [read_receipts.mark_read(PHONE_NUMBER_ID, "wamid.in-1", attempt=n) for n in range(4)]
    assert [w[0] if w else None for w in waits] == [*read_receipts.RETRY_DELAYS, None]
    assert counters.MARK_READ.labels("given_up")._value.get() == before + 1
    assert "given up" in caplog.text and TOKEN not in caplog.text


def test_the_sweeper_sends_again_a_status_whose_task_was_lost(shop, redis_client):
    reply = replied("order-11")
    with transaction.atomic():
        edge_statuses.record_statuses([meta_status(reply.wamid, "delivered", datetime.now(UTC))], phone_number_id="1")
    row = DeliveryStatus.objects.get(wamid=reply.wamid)
    redis_client.flushdb()  # the task was lost (Redis restarted empty, say)
    assert sweeper.redrive_statuses(timezone.now() - timedelta(minutes=5), 100) == 0, "too recent to be lost"
    DeliveryStatus.objects.filter(pk=row.pk).update(received_at=timezone.now() - timedelta(minutes=10))
    assert sweeper.redrive_statuses(timezone.now() - timedelta(minutes=5), 100) == 1
    [task] = queued(redis_client, edge_statuses.APPLY_QUEUE)
    assert b"whatsapp.apply_delivery_status" in task and f"delivery-status:{row.pk}".encode() in task
