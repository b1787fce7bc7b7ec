"""The whole loop on real processes: Meta's signed webhook POSTed over HTTP to the web process
(pytest-django's live server), the outbox relay, the reference classifier, ingest and a Celery
worker on a real Kafka broker, and a local server playing the Cloud API. A customer's message
ends as the handler's reply at the Cloud API; status webhooks then move that reply to
delivered and read, or, failed, dead-letter its run."""

from __future__ import annotations

import json
import sys
import threading

import pytest
import requests
from werkzeug import Response

from dlq.models import DeadLetter
from tests.support import kafka as kafka_support
from tests.support import meta
from tests.support.processes import ManagedProcess, wait_until
from whatsapp.contracts.request import processing_id_for
from whatsapp.models import DeliveryStatus, DuplicateDelivery, OutboundMessage, ProcessedMessage, SagaStep

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TOKEN = "EAAG-loop-integration-token"
MESSAGES = f"/v21.0/{meta.PHONE_NUMBER_ID}/messages"
URL = "/webhooks/whatsapp/"


class CloudApi:
    """Answers each text message with a fresh wamid and each read receipt with success, as Meta does."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.texts: list[dict] = []

    def __call__(self, request) -> Response:
        body = request.get_json()
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        if body.get("status") == "read":
            return Response('{"success": true}', status=200, content_type="application/json")
        with self.lock:
            self.texts.append(body)
            wamid = f"wamid.reply.{len(self.texts)}"
        # Meta: a send to a number answers with its wa_id, one to a BSUID (`recipient`) with its user_id.
        contact = (
            {"input": body["to"], "wa_id": body["to"]}
            if "to" in body
            else {"input": body["recipient"], "user_id": body["recipient"]}
        )
        answer = {"messaging_product": "whatsapp", "contacts": [contact], "messages": [{"id": wamid}]}
        return Response(json.dumps(answer), status=200, content_type="application/json")

    def sent_to(self, wa_id: str) -> list[dict]:
        with self.lock:
            return [text for text in self.texts if wa_id in (text.get("to"), text.get("recipient"))]


def post(web: str, delivery: dict) -> int:
    body = meta.encode(delivery)
    return requests.post(web + URL, data=body, headers=meta.signed_headers(body), timeout=10).status_code


@pytest.fixture
def worker_log_level() -> str:
    """A module whose test reads the tasks' arguments in the worker's log overrides this with DEBUG."""
    return "INFO"


@pytest.fixture
def loop(
    live_server,
    webhook_secrets,
    wa_business,
    httpserver,
    bootstrap,
    request_topic,
    topic,
    child_env,
    processes,
    worker_log_level,
) -> tuple[str, CloudApi, list[ManagedProcess]]:
    """Web (the live server), relay, classify, ingest and a worker, wired topic to topic."""
    from leads.models import Product

    Product.objects.create(business=wa_business, sku="CR-02", name="croissant", price="2.20", stock=100)
    wa_business.save()
    api = CloudApi()
    httpserver.expect_request(MESSAGES, method="POST").respond_with_handler(api)
    env = {
        **child_env,
        "WHATSAPP_GRAPH_BASE_URL": httpserver.url_for("").rstrip("/"),
        "WHATSAPP_ACCESS_TOKEN": TOKEN,
        "RELAY_POLL_INTERVAL_SECONDS": "0.2",
    }
    python = sys.executable
    commands = {
        "relay": [python, "manage.py", "relay_outbox", "--topic", request_topic],
        "classify": [
            python,
            "manage.py",
            "classify",
            "--topic",
            request_topic,
            "--result-topic",
            topic,
            "--group-id",
            f"g-{request_topic}",
        ],
        "ingest": [python, "manage.py", "ingest_kafka", "--topic", topic, "--group-id", f"g-{topic}"],
        "worker": [
            python,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-c",
            "2",
            "-Q",
            "pipeline,webhooks,whatsapp",
            "--without-gossip",
            "--without-mingle",
            "-l",
            worker_log_level,
        ],
    }
    started = [ManagedProcess(name, argv, env) for name, argv in commands.items()]
    processes.extend(started)
    return live_server.url, api, started


def logs(started: list[ManagedProcess]) -> str:
    return "\n".join(f"--- {p.log_path.name}\n{p.output()[-2500:]}" for p in started)


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
