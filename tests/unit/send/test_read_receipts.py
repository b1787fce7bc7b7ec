"""Read receipts (whatsapp.send.read_receipts): tried first by the run's tail task, in Meta's
shape, handed to a retry task only when that try fails retryably, retried a few times, then
given up; never failing or holding up the reply and finish."""

from __future__ import annotations

import base64
import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.clients import cloud_api
from core.metrics import counters
from tests.support.runs import acted
from tests.support.statuses import MESSAGES, PHONE_NUMBER_ID, TOKEN, queued
from whatsapp import saga, tasks
from whatsapp.models import OutboundMessage, ProcessedMessage
from whatsapp.send import read_receipts

pytestmark = pytest.mark.django_db(transaction=True)


def graph_calls(httpserver) -> list[str]:
    """What the Cloud API was asked, in order: "read <message id>" or "text"."""
    bodies = [r.get_json() for r, _ in httpserver.log if r.path == MESSAGES]
    return [f"read {b['message_id']}" if b.get("status") == "read" else "text" for b in bodies]


def test_finish_costs_one_statement_and_sends_no_task(shop, redis_client):
    acted("order-9", 1)
    saga.send_reply("order-9", 1)
    with CaptureQueriesContext(connection) as queries:
        assert saga.finish_run("order-9", 1)
    assert len(queries.captured_queries) == 1
    assert queued(redis_client, read_receipts.QUEUE) == []


def test_the_tail_marks_read_first_then_replies_and_finishes_in_one_task(shop, httpserver, redis_client):
    acted("order-11", 3)
    before = counters.MARK_READ.labels("sent")._value.get()
    assert tasks.reply_and_finish.apply(args=("order-11", 1)).get() is None
    assert graph_calls(httpserver) == ["read wamid.in-order-11", "text"]
    assert ProcessedMessage.objects.get(processing_id="order-11").status == ProcessedMessage.Status.PROCESSED
    assert counters.MARK_READ.labels("sent")._value.get() == before + 1
    # Nothing left for another task: no retry of the receipt, no finish.
    assert queued(redis_client, read_receipts.QUEUE) == [] and queued(redis_client, "pipeline") == []


def test_no_read_receipt_when_marking_read_is_off(shop, httpserver, redis_client, settings):
    settings.WHATSAPP_MARK_READ = False
    acted("order-10", 2)
    tasks.reply_and_finish.apply(args=("order-10", 1)).get()
    assert graph_calls(httpserver) == ["text"]
    assert ProcessedMessage.objects.get(processing_id="order-10").status == ProcessedMessage.Status.PROCESSED
    assert queued(redis_client, read_receipts.QUEUE) == []


def test_a_receipt_that_fails_retryably_goes_to_its_retry_task_and_the_reply_goes_on(
    shop, httpserver, redis_client, monkeypatch
):
    acted("order-12", 4)
    calls: list[str] = []

    def refused_once(*, phone_number_id: str, message_id: str) -> None:
        calls.append(message_id)
        raise cloud_api.CloudApiRetryable("WhatsApp Cloud API answered 500", title="500")

    monkeypatch.setattr(cloud_api, "mark_read", refused_once)
    tasks.reply_and_finish.apply(args=("order-12", 1)).get()
    assert calls == ["wamid.in-order-12"]
    assert graph_calls(httpserver) == ["text"]
    assert ProcessedMessage.objects.get(processing_id="order-12").status == ProcessedMessage.Status.PROCESSED
    [task] = queued(redis_client, read_receipts.QUEUE)
    message = json.loads(task)
    assert message["headers"]["task"] == read_receipts.TASK
    assert message["headers"]["id"] == "order-12:1:mark-read" and message["headers"]["eta"]
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert args == ["order-12", 1, PHONE_NUMBER_ID, "wamid.in-order-12", "lead-123", "ORDER_REQUEST"]
    assert kwargs == {"attempt": 1, "refusals": 0}


def test_a_receipt_that_breaks_never_fails_or_holds_up_the_message(shop, httpserver, redis_client, monkeypatch):
    acted("order-13", 5)

    def broken(*, phone_number_id: str, message_id: str) -> None:
        raise RuntimeError("a bug in the courtesy")

    monkeypatch.setattr(cloud_api, "mark_read", broken)
    before = counters.MARK_READ.labels("given_up")._value.get()
    tasks.reply_and_finish.apply(args=("order-13", 1)).get()
    assert graph_calls(httpserver) == ["text"]
    assert ProcessedMessage.objects.get(processing_id="order-13").status == ProcessedMessage.Status.PROCESSED
    assert counters.MARK_READ.labels("given_up")._value.get() == before + 1
    assert queued(redis_client, read_receipts.QUEUE) == []


def test_a_message_with_no_reply_is_marked_read_and_finished(shop, httpserver):
    acted("order-14", 6)
    ProcessedMessage.objects.filter(processing_id="order-14").update(reply_text="")
    tasks.reply_and_finish.apply(args=("order-14", 1)).get()
    assert graph_calls(httpserver) == ["read wamid.in-order-14"]
    assert ProcessedMessage.objects.get(processing_id="order-14").status == ProcessedMessage.Status.PROCESSED
    assert not OutboundMessage.objects.filter(processing_id="order-14").exists()


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
