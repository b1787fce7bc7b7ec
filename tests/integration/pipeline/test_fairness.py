"""One business flooding the pipeline does not delay another's messages.

The bound (docs/internals/pipeline.md, "Fairness between businesses"): while another business's
flood is queued, no message of a quiet business takes longer from being taken
in to being processed than twice the slowest of the same number on an idle
pipeline plus FLOOD_BOUND_SLACK seconds. Both times are measured in this test, on the same
workers, so a busy machine slows both. Reading the records out of Kafka is not
part of it: a partition is read in order, so ingest reads past the flood's
records first (the test prints how long that took).
"""

from __future__ import annotations

from datetime import datetime

import pytest
from django.db.models import Max, Min
from django.utils import timezone

from leads.models import Business, Product
from tests.support import kafka
from tests.support.events import encode, event
from tests.support.processes import wait_until
from whatsapp.models import ProcessedMessage

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

FLOOD = 5000
QUIET = 50
FLOOD_BOUND_SLACK = 15.0
# Each quiet business's 50 fit its burst; the flooder's allowance on the normal
# lane (its burst, then half a message a second) is small beside what two
# worker processes get through even on a busy machine.
RATE_ENV = {"BUSINESS_RATE_PER_SECOND": "0.5", "BUSINESS_RATE_BURST": str(50)}


def quiet_events(business: Business) -> list[tuple[bytes, bytes]]:
    return [
        (
            f"q-{i}".encode(),
            encode(
                event(
                    f"{business.business_id}-{i:03d}",
                    lead_id=f"q-{i}",
                    business_id=business.business_id,
                    tenant_id=business.tenant_id,
                    intent="PRICING_INQUIRY",
                )
            ),
        )
        for i in range(QUIET)
    ]


def quiet_business(business_id: str) -> Business:
    return Business.objects.create(
        business_id=business_id, tenant_id=f"tenant-{business_id}", display_name=business_id.replace("-", " ").title()
    )


def slowest(business: Business, timeout: float) -> tuple[float, datetime]:
    """The longest any of the business's messages took from being taken in to
    being processed, and when the last of them was taken in."""
    messages = ProcessedMessage.objects.filter(business_id=business.business_id)
    wait_until(
        lambda: messages.filter(status="PROCESSED").count() == QUIET,
        timeout=timeout,
        interval=0.2,
        message=f"{QUIET} messages of {business.business_id} processed",
    )
    latency = max((m.finished_at - m.received_at).total_seconds() for m in messages)
    return latency, messages.aggregate(last=Max("received_at"))["last"]


def test_flooding_business_does_not_delay_another(bootstrap, topic, start_ingest, start_worker, business):
    Product.objects.filter(sku="SD-01").update(stock=1_000_000)
    start_worker(concurrency=2, name="w1", env=RATE_ENV)
    start_worker(concurrency=2, name="w2", env=RATE_ENV)
    start_ingest(topic, env=RATE_ENV)

    # A quiet business alone: the baseline.
    alone_shop = quiet_business("corner-shop")
    kafka.produce(bootstrap, topic, quiet_events(alone_shop))
    alone, _ = slowest(alone_shop, timeout=120)

    # The flood, then another quiet business's 50 right behind it in the log.
    flood = [
        (
            f"lead-{i % 200}".encode(),
            encode(
                event(
                    f"flood-{i:05d}", lead_id=f"lead-{i % 200}", intent="ORDER_REQUEST" if i % 2 else "PRICING_INQUIRY"
                )
            ),
        )
        for i in range(FLOOD)
    ]
    produced = timezone.now()
    kafka.produce(bootstrap, topic, flood)
    flooded_shop = quiet_business("market-stall")
    kafka.produce(bootstrap, topic, quiet_events(flooded_shop))
    bound = 2 * alone + FLOOD_BOUND_SLACK
    flooded, taken_in_at = slowest(flooded_shop, timeout=600)

    backlog = ProcessedMessage.objects.filter(business_id=business.business_id).exclude(status="PROCESSED").count()
    taken_in = ProcessedMessage.objects.filter(business_id=business.business_id).count()
    print(
        f"quiet business's slowest message: {alone:.1f}s alone, {flooded:.1f}s behind the flood (bound "
        f"{bound:.1f}s); ingest read past the flood in {(taken_in_at - produced).total_seconds():.1f}s; "
        f"flooder: {taken_in} taken in, {backlog} still waiting"
    )
    # The flood was real: most of it was still waiting when the quiet business finished.
    assert taken_in == FLOOD
    assert backlog > FLOOD // 2
    assert flooded <= bound, f"{flooded:.1f}s behind the flood against {alone:.1f}s alone (bound {bound:.1f}s)"


def test_a_backlog_is_worked_through_message_by_message(bootstrap, topic, start_ingest, start_worker, business):
    """Messages already under way go first, so in a backlog the first messages
    finish (effects done, reply sent) before the last ones are even started,
    instead of every message waiting until nearly all are about to finish."""
    kafka.produce(
        bootstrap,
        topic,
        [
            (f"lead-{i}".encode(), encode(event(f"b-{i:03d}", lead_id=f"lead-{i}", intent="PRICING_INQUIRY")))
            for i in range(30)
        ],
    )
    ingest = start_ingest(topic, "--idle-exit", "3")
    assert ingest.wait(120) == 0, ingest.output()[-3000:]  # the whole backlog queued before any worker runs
    start_worker(concurrency=1, name="w1")
    messages = ProcessedMessage.objects.all()
    wait_until(lambda: messages.filter(status="PROCESSED").count() == 30, timeout=120, message="the backlog processed")
    span = messages.aggregate(first_finished=Min("finished_at"), last_started=Max("started_at"))
    assert span["first_finished"] < span["last_started"], span
