"""Circuit breakers in the pipeline: a call refused by an open breaker waits
out the open time and is retried without spending an attempt."""
from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

import pytest
from werkzeug import Response

from leads.models import Order
from tests.support.events import event
from whatsapp.breakers import force_open
from whatsapp.models import SagaStep

pytestmark = pytest.mark.django_db(transaction=True)


def test_open_breaker_delays_the_action_without_spending_an_attempt(pipeline, business, httpserver):
    httpserver.expect_request("/sales", method="POST").respond_with_handler(
        lambda request: Response("{}", status=200, content_type="application/json"))
    business.sales_webhook_url = httpserver.url_for("/sales")
    business.save()
    force_open(f"webhook:{urlsplit(business.sales_webhook_url).netloc}", seconds=12)

    pipeline.send([event("order-breaker")])
    pipeline.wait_settled(1, timeout=60)

    step = SagaStep.objects.get(message__processing_id="order-breaker", action="NOTIFY_SALES")
    assert (step.status, step.attempts) == ("SUCCEEDED", 1)
    refused = [entry for entry in step.attempt_log if entry.get("refused_by_breaker")]
    assert refused, step.attempt_log
    first, last = (datetime.fromisoformat(step.attempt_log[i]["at"]) for i in (0, -1))
    assert (last - first).total_seconds() >= 2.5  # it waited for the breaker, not the 1 s retry delay
    assert len(httpserver.log) == 1
    assert Order.objects.filter(processing_id="order-breaker", status="CREATED").count() == 1
