"""Delivery statuses and read receipts through real processes: ingest on a Kafka topic, a
Celery worker, and a local server speaking the Cloud API's shapes. The statuses are stored
as the webhook stores them (whatsapp.edge.statuses.record_statuses in one transaction) and
applied by the worker."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from werkzeug import Response

from dlq.models import DeadLetter
from dlq.requeue import requeue
from leads.models import Lead, ReviewFlag
from tests.support import kafka
from tests.support.events import encode, event
from tests.support.processes import wait_until
from whatsapp.edge import statuses as delivery
from whatsapp.models import DeliveryStatus, OutboundMessage, ProcessedMessage

pytestmark = pytest.mark.django_db(transaction=True)

PHONE_NUMBER_ID = "106540352242922"
TOKEN = "EAAG-delivery-integration-token"
MESSAGES = f"/v21.0/{PHONE_NUMBER_ID}/messages"


class CloudApi:
    """The Cloud API: each text message gets the next wamid (wamid.<pid>.1, .2, ...); read
    receipts are answered `read_status` (200, or 500 to play an outage)."""

    def __init__(self, read_status: int = 200) -> None:
        self.lock = threading.Lock()
        self.texts: list[dict] = []
        self.reads: list[dict] = []
        # "read" or the text's processing_id, in the order they came.
        self.calls: list[str] = []
        self.read_status = read_status

    def __call__(self, request) -> Response:
        body = request.get_json()
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        with self.lock:
            if body.get("status") == "read":
                self.reads.append(body)
                self.calls.append("read")
                if self.read_status != 200:
                    error = {"error": {"message": "An unknown error has occurred.", "code": 1, "fbtrace_id": "A"}}
                    return Response(json.dumps(error), status=self.read_status, content_type="application/json")
                return Response('{"success": true}', status=200, content_type="application/json")
            self.texts.append(body)
            pid = body["biz_opaque_callback_data"]
            self.calls.append(pid)
            n = sum(1 for t in self.texts if t["biz_opaque_callback_data"] == pid)
        answer = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": body["to"], "wa_id": body["to"]}],
            "messages": [{"id": f"wamid.{pid}.{n}"}],
        }
        return Response(json.dumps(answer), status=200, content_type="application/json")


@pytest.fixture
def loop(httpserver, business, bootstrap, topic, start_ingest, start_worker, tmp_path):
    """Start the pipeline against the stand-in Cloud API: loop(read_status=..., env=...) -> CloudApi."""
    business.phone_number_id = PHONE_NUMBER_ID
    business.save()

    def start(read_status: int = 200, env: dict[str, str] | None = None) -> CloudApi:
        api = CloudApi(read_status)
        httpserver.expect_request(MESSAGES, method="POST").respond_with_handler(api)
        worker_env = {
            "WHATSAPP_GRAPH_BASE_URL": httpserver.url_for("").rstrip("/"),
            "WHATSAPP_ACCESS_TOKEN": TOKEN,
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
            **(env or {}),
        }
        start_worker(env=worker_env)
        start_ingest(topic)
        return api

    return start


def run_message(bootstrap, topic, pid: str, status: str = "PROCESSED") -> ProcessedMessage:
    received = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    body = event(pid, message_id=f"wamid.in-{pid}", message={"text": "2 loaves please", "received_at": received})
    kafka.produce(bootstrap, topic, [(body["lead_id"].encode(), encode(body))])
    wait_until(
        lambda: ProcessedMessage.objects.filter(processing_id=pid, status=status).exists(),
        timeout=90,
        message=f"{pid} to be {status}",
    )
    return ProcessedMessage.objects.get(processing_id=pid)


def webhook_delivers(*statuses: dict) -> int:
    """What the webhook does with a delivery's value.statuses[]: one short transaction."""
    with transaction.atomic():
        return delivery.record_statuses(list(statuses), phone_number_id=PHONE_NUMBER_ID)


def meta_status(wamid: str, status: str, at: datetime, **extra) -> dict:
    return {
        "id": wamid,
        "status": status,
        "timestamp": str(int(at.timestamp())),
        "recipient_id": "15550123456",
        **extra,
    }


def settled(count: int, timeout: float = 60) -> None:
    wait_until(
        lambda: DeliveryStatus.objects.exclude(outcome="").count() >= count,
        timeout=timeout,
        message=f"{count} delivery statuses applied",
    )


def test_statuses_out_of_order_move_the_reply_to_read_with_each_time(loop, bootstrap, topic):
    api = loop()
    run_message(bootstrap, topic, "status-1")
    reply = OutboundMessage.objects.get(processing_id="status-1")
    assert reply.wamid == "wamid.status-1.1" and [t["text"]["body"] for t in api.texts] == [reply.body]

    t0 = (datetime.now(UTC) - timedelta(seconds=30)).replace(microsecond=0)
    assert webhook_delivers(meta_status(reply.wamid, "read", t0 + timedelta(seconds=20))) == 1
    settled(1)
    # A late delivered and sent (one body), and Meta redelivering the read.
    assert (
        webhook_delivers(
            meta_status(reply.wamid, "delivered", t0 + timedelta(seconds=10)),
            meta_status(reply.wamid, "sent", t0),
            meta_status(reply.wamid, "read", t0 + timedelta(seconds=20)),
        )
        == 2
    )
    settled(3)
    reply.refresh_from_db()
    assert (reply.status, reply.delivery_status) == ("SENT", "read")
    assert (reply.sent_at, reply.delivered_at, reply.read_at) == (
        t0,
        t0 + timedelta(seconds=10),
        t0 + timedelta(seconds=20),
    )
    outcomes = dict(DeliveryStatus.objects.values_list("status", "outcome"))
    assert outcomes == {"read": "applied", "delivered": "stale", "sent": "stale"}


def test_a_failed_delivery_is_dead_lettered_flags_the_lead_and_requeue_sends_again(loop, bootstrap, topic):
    api = loop()
    run_message(bootstrap, topic, "status-2")
    reply = OutboundMessage.objects.get(processing_id="status-2")
    failed = meta_status(
        reply.wamid,
        "failed",
        datetime.now(UTC),
        errors=[
            {
                "code": 131047,
                "title": "Re-engagement message",
                "message": "Re-engagement message",
                "error_data": {"details": "Message failed to send because more than 24 hours have passed."},
            }
        ],
    )
    webhook_delivers(failed)
    settled(1)
    reply.refresh_from_db()
    assert (reply.status, reply.error_code, reply.error_title) == ("FAILED", 131047, "Re-engagement message")
    entry = DeadLetter.objects.get(processing_id="status-2")
    assert (entry.stage, entry.reason, entry.status) == ("reply", "delivery_failed", "OPEN")
    assert ProcessedMessage.objects.get(processing_id="status-2").status == "FAILED"
    assert Lead.objects.get(aliases__alias="lead-123").needs_review
    assert ReviewFlag.objects.filter(reason="reengagement_needed", processing_id="status-2").exists()

    requeue(entry.pk, by="ops")
    wait_until(
        lambda: OutboundMessage.objects.filter(processing_id="status-2", wamid="wamid.status-2.2").exists(),
        timeout=60,
        message="the reply sent again",
    )
    run = ProcessedMessage.objects.get(processing_id="status-2")
    wait_until(lambda: ProcessedMessage.objects.get(pk=run.pk).status == "PROCESSED", timeout=30, message="finished")
    assert [t["biz_opaque_callback_data"] for t in api.texts] == ["status-2", "status-2"]
    assert api.calls == ["read", "status-2", "status-2"], "the requeue sends the reply again, not the receipt"
    webhook_delivers(meta_status("wamid.status-2.2", "delivered", datetime.now(UTC)))
    settled(2)
    reply.refresh_from_db()
    assert (reply.status, reply.delivery_status, reply.error_code) == ("SENT", "delivered", None)


def test_an_unknown_wamid_is_counted_and_nothing_fails(loop, tmp_path):
    loop()
    webhook_delivers(meta_status("wamid.not-ours", "delivered", datetime.now(UTC)))
    settled(1, timeout=60)  # after its few looks (2 s, 10 s)
    assert DeliveryStatus.objects.get(wamid="wamid.not-ours").outcome == "unknown"
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    assert registry.get_sample_value("whatsapp_delivery_status_total", {"status": "delivered", "outcome": "unknown"})
    assert not DeadLetter.objects.exists()


def test_the_customers_message_is_marked_read_first_in_its_runs_tail(loop, bootstrap, topic):
    api = loop()
    run_message(bootstrap, topic, "read-1")
    # In the same task as the reply and finish, before the reply: done by the time the run is.
    assert api.reads == [{"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.in-read-1"}]
    assert api.calls == ["read", "read-1"]


def test_no_read_receipt_when_marking_read_is_off(loop, bootstrap, topic):
    api = loop(env={"WHATSAPP_MARK_READ": "0"})
    run_message(bootstrap, topic, "read-2")
    run_message(bootstrap, topic, "read-3")  # by the time it is done, the first one's receipt would be out
    assert len(api.texts) == 2 and api.reads == []


def test_a_failing_read_receipt_does_not_fail_the_run(loop, bootstrap, topic):
    api = loop(read_status=500)
    message = run_message(bootstrap, topic, "read-4")
    assert message.failed_stage == ""
    wait_until(lambda: len(api.reads) >= 2, timeout=30, message="the read receipt retried")
    assert OutboundMessage.objects.get(processing_id="read-4").status == "SENT"
    assert ProcessedMessage.objects.get(processing_id="read-4").status == "PROCESSED"
    assert not DeadLetter.objects.exists()
