"""The whole loop on real processes: Meta's signed webhook POSTed over HTTP to the web process
(pytest-django's live server), the outbox relay, the reference classifier, ingest and a Celery
worker on a real Kafka broker, and a local server playing the Cloud API. A customer's message
ends as the handler's reply at the Cloud API; status webhooks then move that reply to
delivered and read, or, failed, dead-letter its run."""

from __future__ import annotations

import json

import pytest

from dlq.models import DeadLetter
from tests.support import kafka as kafka_support
from tests.support import meta
from tests.support.loop import logs, post
from tests.support.processes import wait_until
from whatsapp.contracts.request import processing_id_for
from whatsapp.models import DeliveryStatus, DuplicateDelivery, OutboundMessage, ProcessedMessage, SagaStep

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_a_webhook_message_ends_as_the_reply_and_its_statuses_are_applied(loop, bootstrap, request_topic, redis_client):
    web, api, started = loop
    order = meta.text_message("Hi, I'd like 2 sourdough loaves please", sender="15550000011")
    pricing = meta.text_message("Hola, ¿cuánto cuestan los croissants?", sender="15550000012")
    # Meta delivers the order three times (a redelivery, and one more for good measure).
    for _ in range(3):
        assert post(web, meta.message_delivery(order, name="Ana Souza")) == 200
    assert post(web, meta.message_delivery(pricing, name="Lucía")) == 200

    order_pid, pricing_pid = processing_id_for(order["id"]), processing_id_for(pricing["id"])
    wait_until(
        lambda: (
            ProcessedMessage.objects.filter(processing_id__in=[order_pid, pricing_pid], status="PROCESSED").count() == 2
        ),
        timeout=120,
        message=f"both messages processed\n{logs(started)}",
    )

    # One request event, one run, one reply for the order however often Meta delivered it.
    requests_out = [json.loads(value) for _, value in kafka_support.read_all(bootstrap, request_topic)]
    assert sorted(r["processing_id"] for r in requests_out) == sorted([order_pid, pricing_pid])
    run = ProcessedMessage.objects.get(processing_id=order_pid)
    assert run.saga_run == 1 and run.intent == "ORDER_REQUEST" and run.handler == "order"
    assert SagaStep.objects.filter(message=run).exclude(saga_run=1).count() == 0
    assert not DuplicateDelivery.objects.exists()
    assert OutboundMessage.objects.filter(processing_id=order_pid).count() == 1

    # The order handler's confirmation, priced from the catalog, in English; the pricing answer in Spanish.
    [order_reply] = api.sent_to("15550000011")
    assert order_reply["text"]["body"] == (
        "Thanks for your order with Acme Bakery!\n- 2 x sourdough loaf: 13.00 USD\nTotal: 13.00 USD\n"
        "We'll let you know when it's ready."
    )
    assert order_reply["context"]["message_id"] == order["id"]
    [pricing_reply] = api.sent_to("15550000012")
    assert pricing_reply["text"]["body"] == "Estos son los precios en Acme Bakery:\ncroissant: 2.20 USD"

    # Statuses for the order's reply, read before delivered (Meta keeps no order): it ends read.
    reply = OutboundMessage.objects.get(processing_id=order_pid)
    assert reply.wamid.startswith("wamid.reply.") and reply.status == "SENT"
    assert post(web, meta.status_delivery(meta.status(reply.wamid, "read", recipient=reply.to))) == 200
    assert post(web, meta.status_delivery(meta.status(reply.wamid, "delivered", recipient=reply.to))) == 200
    # The pricing reply could not be delivered: the customer's 24 hours were over (131047).
    failed = OutboundMessage.objects.get(processing_id=pricing_pid)
    error = {"code": 131047, "title": "Re-engagement message", "message": "Re-engagement message"}
    assert post(web, meta.status_delivery(meta.status(failed.wamid, "failed", recipient=failed.to, errors=[error])))
    wait_until(
        lambda: DeliveryStatus.objects.exclude(outcome="").count() == 3,
        timeout=60,
        message=f"the three statuses applied\n{logs(started)}",
    )
    reply.refresh_from_db()
    assert reply.delivery_status == "read" and reply.delivered_at and reply.read_at
    assert ProcessedMessage.objects.get(processing_id=order_pid).status == "PROCESSED"

    failed.refresh_from_db()
    assert failed.delivery_status == "failed" and failed.error_code == 131047
    entry = DeadLetter.objects.get(processing_id=pricing_pid)
    assert (entry.stage, entry.reason) == ("reply", "delivery_failed")
    assert "131047" in entry.error_message and "Re-engagement message" in entry.error_message
    assert ProcessedMessage.objects.get(processing_id=pricing_pid).status == "FAILED"
    assert DeadLetter.objects.count() == 1, "nothing else was dead-lettered"
