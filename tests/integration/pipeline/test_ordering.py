"""One customer's messages run in order (whatsapp.pipeline.turns), through the real loop:
Kafka, ingest, two worker processes at -c 2, and a local Cloud API.

50 customers write 8 order messages each, produced as fast as the producer goes. For every
customer the runs did not overlap and finished in the order the customer sent them (the
inbox's times, the lead's activity log, the orders and the replies all say so), while
different customers' runs did overlap (no global lock); nothing was lost or doubled. One
customer's fourth message fails for good (the shop's CRM refuses its sales notification): it is
dead-lettered, and that customer's later messages still finish, in order."""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest
from werkzeug import Response

from dlq.models import DeadLetter
from leads.models import LeadActivity, Order, Product
from tests.support import kafka
from tests.support.events import encode, event, now_iso
from tests.support.loop import TOKEN, CloudApi
from tests.support.processes import wait_until
from whatsapp.models import ConversationTurn, ProcessedMessage

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CUSTOMERS, EACH = 50, 8
PHONE_NUMBER_ID = "106540352242977"
# The customer whose fourth message the shop's CRM refuses (422): its run is compensated and
# dead-lettered as non_retryable.
FAILING, FAILING_AT = 7, 3


def pid(c: int, n: int) -> str:
    return f"ord-{c:02d}-{n}"


def number(c: int) -> str:
    return f"1555020{c:04d}"


def crm(request) -> Response:
    if request.get_json().get("processing_id") == pid(FAILING, FAILING_AT):
        return Response('{"error": "lead refused"}', status=422, content_type="application/json")
    return Response("{}", status=200, content_type="application/json")


def test_each_customers_messages_finish_in_the_order_sent(
    httpserver, business, bootstrap, topic, start_ingest, start_worker
):
    business.phone_number_id = PHONE_NUMBER_ID
    business.sales_webhook_url = httpserver.url_for("/sales")
    business.save()
    Product.objects.filter(sku="SD-01").update(stock=1_000_000)
    api = CloudApi()
    httpserver.expect_request(f"/v21.0/{PHONE_NUMBER_ID}/messages", method="POST").respond_with_handler(api)
    httpserver.expect_request("/sales", method="POST").respond_with_handler(crm)
    env = {"WHATSAPP_GRAPH_BASE_URL": httpserver.url_for("").rstrip("/"), "WHATSAPP_ACCESS_TOKEN": TOKEN}
    start_worker(concurrency=2, name="w1", env=env)
    start_worker(concurrency=2, name="w2", env=env)
    start_ingest(topic, env=env)

    # Each customer's 8 sent a second apart and produced one after the other, so they reach
    # ingest in one batch and would run on four worker slots at once; each asks for its own
    # quantity (n + 1 loaves), so the orders and the replies say which message they answer.
    records = []
    for c in range(CUSTOMERS):
        for n in range(EACH):
            body = event(
                pid(c, n),
                lead_id=f"ord-lead-{c:02d}",
                customer={"wa_id": number(c), "name": f"Customer {c}"},
                message_id=f"wamid.{pid(c, n)}",
                message={"text": f"{n + 1} sourdough please", "received_at": now_iso(minutes_ago=(EACH - n) / 60)},
                intent="ORDER_REQUEST",
                entities={"products": [{"sku": "SD-01", "name": "sourdough loaf", "quantity": n + 1}]},
            )
            records.append((body["lead_id"].encode(), encode(body)))
    kafka.produce(bootstrap, topic, records)

    total = CUSTOMERS * EACH
    wait_until(
        lambda: ProcessedMessage.objects.filter(status__in=["PROCESSED", "FAILED"]).count() == total,
        timeout=420,
        interval=1,
        message=f"{total} messages finished",
    )

    # Nothing lost or doubled: every message ended once, the failing one dead-lettered.
    assert ProcessedMessage.objects.filter(status="PROCESSED").count() == total - 1
    failed = ProcessedMessage.objects.get(status="FAILED")
    assert failed.processing_id == pid(FAILING, FAILING_AT)
    assert DeadLetter.objects.filter(processing_id=failed.processing_id, reason="non_retryable").count() == 1
    assert DeadLetter.objects.count() == 1
    assert not ConversationTurn.objects.exists(), "every conversation's turn was handed back"
    assert Order.objects.count() == total
    assert list(Order.objects.filter(status="CANCELLED").values_list("lead__wa_id", flat=True)) == [number(FAILING)], (
        "the failed run's order was compensated"
    )

    rows = defaultdict(list)
    for row in ProcessedMessage.objects.order_by("started_at").values(
        "processing_id", "lead_id", "started_at", "finished_at", "status"
    ):
        rows[row["lead_id"]].append(row)
    assert len(rows) == CUSTOMERS
    for c in range(CUSTOMERS):
        lead = f"ord-lead-{c:02d}"
        runs = rows[lead]
        # Started in the order sent, each only once the one before had finished.
        assert [r["processing_id"] for r in runs] == [pid(c, n) for n in range(EACH)], lead
        for before, after in itertools.pairwise(runs):
            assert before["finished_at"] <= after["started_at"], (lead, before["processing_id"])
        # The lead's activity log records the finishes in the same order.
        logged = list(
            LeadActivity.objects.filter(lead__wa_id=number(c), kind="message_processed")
            .order_by("id")
            .values_list("processing_id", flat=True)
        )
        assert logged == [pid(c, n) for n in range(EACH) if (c, n) != (FAILING, FAILING_AT)], lead
        # The orders were made in that order, and the replies went out in it.
        quantities = [
            order.lines.get().quantity
            for order in Order.objects.filter(lead__wa_id=number(c))
            .exclude(status="CANCELLED")
            .order_by("id")
            .prefetch_related("lines")
        ]
        expected = [n + 1 for n in range(EACH) if (c, n) != (FAILING, FAILING_AT)]
        assert quantities == expected, lead
        replies = [r["text"]["body"] for r in api.sent_to(number(c))]
        assert [int(r.split("- ", 1)[1].split(" x ", 1)[0]) for r in replies] == expected, lead

    # Different customers' runs overlapped: no customer waited on another's.
    spans = sorted((r["started_at"], r["finished_at"], lead) for lead, runs in rows.items() for r in runs)
    overlapping = sum(1 for (s1, f1, l1), (s2, _f2, l2) in itertools.pairwise(spans) if l1 != l2 and s2 < f1)
    assert overlapping > 0
