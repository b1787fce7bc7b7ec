"""A shop whose Cloud API is a local server, and Meta's delivery statuses as the webhook
receives them: shared by the unit tests of storing statuses (edge), applying them (saga),
read receipts (send) and the sweeper (recovery)."""

from __future__ import annotations

from datetime import datetime

import pytest
from django.db import transaction
from werkzeug import Response

from core.metrics import counters
from tests.support.events import encode, event
from whatsapp import saga
from whatsapp.edge import statuses as edge_statuses
from whatsapp.ingest.intake import take_in
from whatsapp.kafka import Record
from whatsapp.models import DeliveryStatus, OutboundMessage
from whatsapp.saga import statuses as saga_statuses

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
