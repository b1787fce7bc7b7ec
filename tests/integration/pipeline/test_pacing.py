"""300 replies to 30 customers through the real loop (Kafka, ingest, two worker processes) to a
stand-in Cloud API that throttles as Meta does: 130429 past 20 messages a second for the
number, 131056 for a customer sent to twice within 6 s. With the pacer at those limits
(whatsapp.send.pacer) every reply reaches it, none is throttled and none dead-lettered."""

from __future__ import annotations

import pytest

from dlq.models import DeadLetter
from leads.models import Product
from tests.support import kafka
from tests.support.events import encode, event, now_iso
from tests.support.loop import MESSAGES, TOKEN, CloudApi
from tests.support.processes import wait_until
from whatsapp.models import OutboundMessage, ProcessedMessage

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CUSTOMERS, EACH = 30, 10
PHONE_NUMBER_ID = "106540352242922"
LIMITS = {
    "WHATSAPP_NUMBER_MPS": "20",
    "WHATSAPP_PAIR_INTERVAL_SECONDS": "6",
    "WHATSAPP_PAIR_BURST": "1",
    # Our slot and the request's arrival at the stand-in are apart by a commit and a connect,
    # on a busy machine: the margin the pacer adds to every window for it.
    "WHATSAPP_PACE_MARGIN_SECONDS": "0.5",
}


def test_paced_replies_all_reach_the_cloud_api_unthrottled(
    httpserver, business, bootstrap, topic, start_ingest, start_worker
):
    business.phone_number_id = PHONE_NUMBER_ID
    business.save()
    Product.objects.filter(sku="SD-01").update(stock=1_000_000)
    api = CloudApi(number_mps=20, pair_interval=6.0)
    httpserver.expect_request(f"/v21.0/{PHONE_NUMBER_ID}/messages", method="POST").respond_with_handler(api)
    assert MESSAGES.endswith("/messages")
    env = {**LIMITS, "WHATSAPP_GRAPH_BASE_URL": httpserver.url_for("").rstrip("/"), "WHATSAPP_ACCESS_TOKEN": TOKEN}
    start_worker(concurrency=2, name="w1", env=env)
    start_worker(concurrency=2, name="w2", env=env)
    start_ingest(topic, env=env)

    records = []
    for n in range(EACH):
        for c in range(CUSTOMERS):
            body = event(
                f"pace-{c:02d}-{n:02d}",
                lead_id=f"pace-lead-{c:02d}",
                customer={"wa_id": f"1555010{c:04d}", "name": f"Customer {c}"},
                message_id=f"wamid.pace-{c:02d}-{n:02d}",
                message={"text": "how much is a loaf?", "received_at": now_iso()},
                intent="PRICING_INQUIRY",
            )
            records.append((body["lead_id"].encode(), encode(body)))
    kafka.produce(bootstrap, topic, records)

    total = CUSTOMERS * EACH
    wait_until(lambda: len(api.texts) >= total, timeout=420, interval=1, message=f"{total} replies at the stand-in")
    wait_until(
        lambda: ProcessedMessage.objects.filter(status="PROCESSED").count() == total,
        timeout=60,
        message="every message processed",
    )
    assert api.throttled == []
    assert len(api.texts) == total
    assert OutboundMessage.objects.filter(status="SENT").count() == total
    assert not DeadLetter.objects.exists()
    per_customer = {}
    for text in api.texts:
        per_customer[text["to"]] = per_customer.get(text["to"], 0) + 1
    assert sorted(per_customer.values()) == [EACH] * CUSTOMERS
