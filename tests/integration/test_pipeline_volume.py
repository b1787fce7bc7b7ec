"""2,000 mixed messages through ingest and two worker processes: each ends
processed, duplicate or dead-lettered, and no effect happens twice."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
from django.db.models import Count
from werkzeug import Response

from dlq.models import DeadLetter
from leads.models import Business, Order, Product, SalesNotification, SupportTicket
from tests.support import kafka
from tests.support.events import encode, event, invalid_values, later_iso
from whatsapp.models import DuplicateDelivery, ProcessedMessage

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MIX = [
    {"intent": "ORDER_REQUEST"},
    {"intent": "PRICING_INQUIRY"},
    {"intent": "AVAILABILITY_INQUIRY"},
    {"intent": "COMPLAINT", "entities": {"severity": "medium"}},
    {"intent": "SCHEDULE_CALL", "entities": {"preferred_time": later_iso()}},
    {"intent": "UNKNOWN"},
    {"intent": "ORDER_REQUEST", "confidence": 0.5},
]


def test_two_thousand_mixed_messages(bootstrap, topic, start_ingest, start_worker, business, httpserver, child_env):
    Product.objects.filter(sku="SD-01").update(stock=100_000)
    httpserver.expect_request("/sales", method="POST").respond_with_handler(
        lambda request: Response("{}", status=200, content_type="application/json")
    )
    business.sales_webhook_url = httpserver.url_for("/sales")
    business.save()
    # A second tenant whose webhook refuses everything: its notifications fail for good.
    broken = Business.objects.create(
        business_id="broken-hooks",
        tenant_id="tenant-broken",
        display_name="Broken",
        sales_webhook_url=httpserver.url_for("/gone"),
    )
    Product.objects.create(business=broken, sku="SD-01", name="sourdough loaf", price="6.50", stock=100_000)
    httpserver.expect_request("/gone", method="POST").respond_with_data('{"error":"gone"}', status=410)

    records = []
    for i in range(2000):
        overrides = dict(MIX[i % len(MIX)])
        if i % 50 == 7:
            overrides.update(business_id="broken-hooks", tenant_id="tenant-broken")
        lead = f"lead-{i % 97}"
        records.append((lead.encode(), encode(event(f"m-{i:05d}", lead_id=lead, **overrides))))
    bad = list(invalid_values().values())
    stream = records + records[::20] + [(None, bad[i % len(bad)]) for i in range(30)]
    kafka.produce(bootstrap, topic, stream)

    start_worker(concurrency=2, name="w1")
    start_worker(concurrency=2, name="w2")
    ingest = start_ingest(topic, "--idle-exit", "10")
    assert ingest.wait(300) == 0
    from tests.support.processes import wait_until

    wait_until(
        lambda: not ProcessedMessage.objects.filter(status__in=["RECEIVED", "PROCESSING"]).exists(),
        timeout=600,
        interval=2,
        message="all messages to settle",
    )

    statuses = Counter(ProcessedMessage.objects.values_list("status", flat=True))
    assert sum(statuses.values()) == 2000
    assert DuplicateDelivery.objects.count() == 100
    assert DeadLetter.objects.filter(stage="ingest").count() == 30
    failed = ProcessedMessage.objects.filter(status="FAILED")
    # Exactly the broken tenant's messages that notify sales failed, each with one DLQ entry.
    assert set(failed.values_list("business_id", flat=True)) == {"broken-hooks"}
    assert DeadLetter.objects.exclude(stage="ingest").count() == failed.count() == statuses["FAILED"]
    assert statuses["PROCESSED"] + statuses["FAILED"] == 2000

    # No effect twice: one live order per processed order message, one notification per step.
    assert not Order.objects.values("processing_id").annotate(n=Count("id")).filter(n__gt=1).exists()
    assert not SupportTicket.objects.values("processing_id").annotate(n=Count("id")).filter(n__gt=1).exists()
    assert not SalesNotification.objects.values("idempotency_key").annotate(n=Count("id")).filter(n__gt=1).exists()
    processed_orders = ProcessedMessage.objects.filter(status="PROCESSED", handler="order").count()
    assert Order.objects.filter(status="CREATED").count() == processed_orders
    assert (
        Order.objects.filter(status="CANCELLED").count()
        == failed.filter(intent="ORDER_REQUEST", handler="order").count()
    )

    out = subprocess.run(
        [sys.executable, "manage.py", "pipeline_stats", "--json"],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    stats = json.loads(out)
    assert stats["processed"] == statuses["PROCESSED"]
    assert stats["failed"] == statuses["FAILED"]
    assert stats["in_flight"] == 0
    assert stats["duplicates"] == 100
    assert stats["dead_letters"]["total"] == DeadLetter.objects.count()
    assert stats["orders"].get("CREATED", 0) == processed_orders
    assert stats["tickets"].get("OPEN", 0) == SupportTicket.objects.filter(status="OPEN").count()
