"""Read receipts (whatsapp.send.read_receipts): sent once after finish, in Meta's shape, retried
a few times, then given up."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.clients import cloud_api
from core.metrics import counters
from tests.support.events import encode, event
from tests.support.statuses import MESSAGES, PHONE_NUMBER_ID, TOKEN, queued
from whatsapp import saga
from whatsapp.ingest.intake import take_in
from whatsapp.kafka import Record
from whatsapp.send import read_receipts

pytestmark = pytest.mark.django_db(transaction=True)


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
