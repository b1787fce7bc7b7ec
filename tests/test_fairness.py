"""One business flooding the pipeline does not delay another's messages.

The bound (README, "Fairness between businesses"): while another business
floods, a business within its rate sees its messages finish within twice
their time on an idle pipeline plus FLOOD_BOUND_SLACK seconds. Both times are
measured in this test, on the same workers, so a slow machine slows both.
"""
from __future__ import annotations

import time

import pytest

from leads.models import Business, Product
from tests.support import kafka
from tests.support.events import encode, event
from tests.support.processes import wait_until
from whatsapp.models import ProcessedMessage

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

FLOOD = 5000
QUIET = 50
FLOOD_BOUND_SLACK = 15.0
# Small enough that the flooder's normal-lane allowance is a fraction of what
# two worker processes get through.
RATE_ENV = {"BUSINESS_RATE_PER_SECOND": "2", "BUSINESS_RATE_BURST": "100"}


def quiet_events(business: Business, prefix: str) -> list[tuple[bytes, bytes]]:
    return [(f"q-{i}".encode(), encode(event(f"{prefix}-{i:03d}", lead_id=f"q-{i}", business_id=business.business_id,
                                              tenant_id=business.tenant_id, intent="PRICING_INQUIRY")))
            for i in range(QUIET)]


def time_to_finish(prefix: str, started: float, timeout: float) -> float:
    def finished() -> bool:
        return ProcessedMessage.objects.filter(processing_id__startswith=prefix, status="PROCESSED").count() == QUIET

    wait_until(finished, timeout=timeout, interval=0.2, message=f"{QUIET} {prefix} messages processed")
    return time.monotonic() - started


def test_flooding_business_does_not_delay_another(bootstrap, topic, start_ingest, start_worker, business):
    Product.objects.filter(sku="SD-01").update(stock=1_000_000)
    quiet = Business.objects.create(business_id="corner-shop", tenant_id="tenant-corner", display_name="Corner Shop")
    start_worker(concurrency=2, name="w1", env=RATE_ENV)
    start_worker(concurrency=2, name="w2", env=RATE_ENV)
    start_ingest(topic, env=RATE_ENV)

    # The quiet business alone: the baseline.
    started = time.monotonic()
    kafka.produce(bootstrap, topic, quiet_events(quiet, "alone"))
    alone = time_to_finish("alone", started, timeout=120)

    # The flood, then the quiet business's next 50 right behind it.
    flood = [(f"lead-{i % 200}".encode(), encode(event(f"flood-{i:05d}", lead_id=f"lead-{i % 200}",
                                                         intent="ORDER_REQUEST" if i % 2 else "PRICING_INQUIRY")))
             for i in range(FLOOD)]
    kafka.produce(bootstrap, topic, flood)
    started = time.monotonic()
    kafka.produce(bootstrap, topic, quiet_events(quiet, "flooded"))
    bound = 2 * alone + FLOOD_BOUND_SLACK
    flooded = time_to_finish("flooded", started, timeout=max(bound * 3, 120))

    backlog = ProcessedMessage.objects.filter(business_id=business.business_id).exclude(status="PROCESSED").count()
    taken_in = ProcessedMessage.objects.filter(business_id=business.business_id).count()
    print(f"quiet business: {alone:.1f}s alone, {flooded:.1f}s behind the flood (bound {bound:.1f}s); "
          f"flooder: {taken_in} taken in, {backlog} still waiting")
    # The flood was real: most of it was still waiting when the quiet business finished.
    assert taken_in == FLOOD
    assert backlog > FLOOD // 2
    assert flooded <= bound, f"{flooded:.1f}s behind the flood against {alone:.1f}s alone (bound {bound:.1f}s)"
