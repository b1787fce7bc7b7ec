"""The reply to the customer, sent as the saga's last step through a real
worker to a local server speaking the WhatsApp Cloud API's shapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from werkzeug import Response

from dlq.models import DeadLetter
from dlq.requeue import requeue
from leads.models import Lead, Order, ReviewFlag
from tests.support import kafka
from tests.support.events import encode, event
from tests.support.processes import wait_until
from whatsapp.models import OutboundMessage, ProcessedMessage

pytestmark = pytest.mark.django_db(transaction=True)
TOKEN = "EAAG-test-token-never-logged"


def now_iso(minutes_ago: float = 1) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


@pytest.fixture
def graph(httpserver, business, bootstrap, topic, start_ingest, start_worker):
    business.phone_number_id = "106540352242922"
    business.save()
    env = {"WHATSAPP_GRAPH_BASE_URL": httpserver.url_for("").rstrip("/"), "WHATSAPP_ACCESS_TOKEN": TOKEN}
    start_worker(env=env)
    start_ingest(topic)
    return httpserver


def send(bootstrap, topic, *events):
    kafka.produce(bootstrap, topic, [(e["lead_id"].encode(), encode(e)) for e in events])


def texts(graph) -> list:
    """The text messages the stand-in received (the read receipts, whatsapp.send.read_receipts, left out)."""
    return [request for request, _ in graph.log if json.loads(request.data).get("type") == "text"]


def settle(pid: str, status: str = "PROCESSED", timeout: float = 90) -> ProcessedMessage:
    wait_until(
        lambda: ProcessedMessage.objects.filter(processing_id=pid, status=status).exists(),
        timeout=timeout,
        message=f"{pid} to be {status}",
    )
    return ProcessedMessage.objects.get(processing_id=pid)


def test_reply_is_sent_last_with_the_cloud_api_shape(graph, bootstrap, topic):
    graph.expect_request("/v21.0/106540352242922/messages", method="POST").respond_with_json(
        {
            "messaging_product": "whatsapp",
            "contacts": [{"input": "15550123456", "wa_id": "15550123456"}],
            "messages": [{"id": "wamid.HBgLMTU1NTAxMjM0NTY3FQIAERgSQUFBQUFBQUFBQUFBQUFBQUFBAA=="}],
        }
    )
    send(bootstrap, topic, event("reply-ok", message={"text": "2 loaves please", "received_at": now_iso()}))
    row = settle("reply-ok")

    (request,) = texts(graph)
    body = json.loads(request.data)
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert body["messaging_product"] == "whatsapp" and body["recipient_type"] == "individual"
    assert body["to"] == "15550123456" and body["type"] == "text"
    assert body["text"]["body"] == row.reply_text and "Total: 13.00 USD" in body["text"]["body"]
    assert body["context"] == {"message_id": "wamid.HBgLMTU1NTAxMjM0NTY3FQIAEhgg"}
    assert body["biz_opaque_callback_data"] == "reply-ok"
    out = OutboundMessage.objects.get(processing_id="reply-ok")
    assert out.status == "SENT" and out.wamid.startswith("wamid.")
    assert Order.objects.filter(processing_id="reply-ok").count() == 1


def test_reply_outside_the_24_hour_window_is_skipped_and_flagged(graph, bootstrap, topic):
    graph.expect_request("/v21.0/106540352242922/messages", method="POST").respond_with_json({"success": True})
    send(bootstrap, topic, event("reply-late", message={"text": "hello?", "received_at": now_iso(minutes_ago=25 * 60)}))
    settle("reply-late")
    assert texts(graph) == []
    # No reply, but the customer's message is marked read all the same.
    wait_until(lambda: graph.log, timeout=30, message="the read receipt")
    assert json.loads(graph.log[0][0].data) == {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": "wamid.HBgLMTU1NTAxMjM0NTY3FQIAEhgg",
    }
    assert OutboundMessage.objects.get(processing_id="reply-late").status == "SKIPPED_WINDOW_CLOSED"
    assert ReviewFlag.objects.filter(reason="window_closed", lead__aliases__alias="lead-123").exists()
    assert Lead.objects.get(aliases__alias="lead-123").needs_review


def test_permanent_reply_error_dead_letters_without_undoing_actions_and_requeue_resends(graph, bootstrap, topic):
    answers = [
        (
            400,
            {
                "error": {
                    "message": "(#131026) Message undeliverable",
                    "type": "OAuthException",
                    "code": 131026,
                    "error_data": {"messaging_product": "whatsapp", "details": "Message undeliverable"},
                    "fbtrace_id": "AbCdEf",
                }
            },
        )
    ]

    def graph_api(request):
        if json.loads(request.data).get("status") == "read":  # the read receipt, tried before the reply
            return Response('{"success": true}', status=200, content_type="application/json")
        status, payload = (
            answers.pop(0)
            if answers
            else (
                200,
                {
                    "messaging_product": "whatsapp",
                    "contacts": [{"input": "15550123456", "wa_id": "15550123456"}],
                    "messages": [{"id": "wamid.second"}],
                },
            )
        )
        return Response(json.dumps(payload), status=status, content_type="application/json")

    graph.expect_request("/v21.0/106540352242922/messages", method="POST").respond_with_handler(graph_api)
    send(bootstrap, topic, event("reply-bad", message={"text": "x", "received_at": now_iso()}))
    settle("reply-bad", status="FAILED")
    entry = DeadLetter.objects.get(processing_id="reply-bad")
    assert (entry.stage, entry.reason) == ("reply", "non_retryable")
    assert "131026" in entry.error_message and TOKEN not in entry.error_message + entry.traceback
    assert Order.objects.get(processing_id="reply-bad").status == "CREATED"  # the order stands
    out = OutboundMessage.objects.get(processing_id="reply-bad")
    assert (out.status, out.error_code) == ("FAILED", 131026)

    requeue(entry.pk, by="ops")
    settle("reply-bad")
    out.refresh_from_db()
    assert out.status == "SENT" and out.wamid == "wamid.second"
    assert Order.objects.filter(processing_id="reply-bad").count() == 1
    assert len(texts(graph)) == 2
    # Marked read once, before the first reply; the requeue sends only the reply again.
    assert len(graph.log) - len(texts(graph)) == 1
