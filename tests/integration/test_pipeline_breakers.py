"""Circuit breakers in the pipeline: a call refused by an open breaker waits
out the open time and is retried without spending an attempt."""

from __future__ import annotations

from datetime import datetime

import pytest
from werkzeug import Response

from core.breakers import force_open
from core.clients.webhook import breaker_name
from leads.models import Order
from tests.support.events import event
from whatsapp.models import SagaStep

pytestmark = pytest.mark.django_db(transaction=True)


def test_open_breaker_delays_the_action_without_spending_an_attempt(pipeline, business, httpserver):
    httpserver.expect_request("/sales", method="POST").respond_with_handler(
        lambda request: Response("{}", status=200, content_type="application/json")
    )
    business.sales_webhook_url = httpserver.url_for("/sales")
    business.save()
    force_open(breaker_name(business.sales_webhook_url), seconds=12)

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


@pytest.mark.slow
def test_four_worker_processes_share_one_breaker_through_a_redis_outage(
    bootstrap, topic, start_ingest, start_worker, business, httpserver, tmp_path
):
    """Four Celery worker processes notify a failing CRM: the breaker opens
    once for all of them, the CRM hears nothing while it is open, half-open
    lets through at most BREAKER_HALF_OPEN_PROBES calls, losing the breakers'
    Redis crashes no task, and the breaker closes once the CRM recovers."""
    import json
    import threading
    import time

    import redis as redis_lib

    from core.breakers import EVENTS_KEY
    from devtools.services import start_redis
    from dlq.models import DeadLetter
    from tests.support import kafka
    from tests.support.events import encode
    from tests.support.processes import wait_until
    from whatsapp.models import ProcessedMessage

    probes, open_seconds = 2, 4.0
    store = start_redis(tmp_path / "breaker-redis")
    port = store.port
    hits: list[float] = []
    answer = {"status": 500}
    lock = threading.Lock()

    def crm(request) -> Response:
        with lock:
            hits.append(time.time())
        return Response(
            json.dumps({"error": "down"} if answer["status"] >= 400 else {"ok": True}),
            status=answer["status"],
            content_type="application/json",
        )

    httpserver.expect_request("/sales", method="POST").respond_with_handler(crm)
    business.sales_webhook_url = httpserver.url_for("/sales")
    business.save()
    name = breaker_name(business.sales_webhook_url)
    env = {
        "BREAKER_REDIS_URL": store.url,
        "BREAKER_OPEN_SECONDS": str(open_seconds),
        "BREAKER_HALF_OPEN_PROBES": str(probes),
        "BREAKER_CLOSE_AFTER": "2",
        "BREAKER_CONSECUTIVE_FAILURES": "5",
        "BREAKER_PROBE_TIMEOUT_SECONDS": "10",
        "BREAKER_REDIS_RETRY_SECONDS": "1",
    }
    worker = start_worker(concurrency=4, env=env)
    start_ingest(topic)
    total = 60
    kafka.produce(
        bootstrap,
        topic,
        [
            (f"l{i}".encode(), encode(event(f"brk-{i:03d}", lead_id=f"l{i}", intent="PRICING_INQUIRY")))
            for i in range(total)
        ],
    )

    def changes() -> list[tuple[str, str, float]]:
        try:
            client = redis_lib.Redis.from_url(store.url)
            return [
                (f[b"from"].decode(), f[b"to"].decode(), float(f[b"at"]))
                for _, f in client.xrange(EVENTS_KEY)
                if f[b"name"] == name.encode()
            ]
        except redis_lib.ConnectionError:
            return []

    # 1. It opens once, for every process, and the CRM hears nothing while it is open.
    wait_until(lambda: changes(), timeout=60, message="the breaker to open")
    time.sleep(open_seconds - 0.5)
    opened_at = changes()[0][2]
    assert [c[:2] for c in changes() if c[2] < opened_at + open_seconds - 0.5] == [("closed", "open")]
    assert [h for h in hits if opened_at + 0.2 < h < opened_at + open_seconds - 0.5] == []

    # 2. Half-open, still failing: at most `probes` calls per half-open spell, across all four processes.
    wait_until(lambda: len(changes()) >= 5, timeout=60, message="two half-open spells")
    seen = changes()
    spells = [(seen[i][2], seen[i + 1][2]) for i in range(len(seen) - 1) if seen[i][1] == "half-open"]
    assert spells
    for start, end in spells:
        assert 1 <= len([h for h in hits if start <= h <= end + 0.05]) <= probes, (start, end, hits)

    # 3. The breakers' Redis goes away and comes back empty: no task crashes.
    store.stop()
    time.sleep(4)
    store = start_redis(tmp_path / "breaker-redis", port=port)
    assert worker.alive()
    try:
        # The state went with the old Redis; the failures trip it again, in the new one.
        wait_until(
            lambda: ("closed", "open") in [c[:2] for c in changes()], timeout=60, message="the breaker to re-open"
        )

        # 4. The CRM recovers: the breaker closes and the messages finish.
        answer["status"] = 200
        wait_until(
            lambda: ("half-open", "closed") in [c[:2] for c in changes()], timeout=60, message="the breaker to close"
        )
        wait_until(
            lambda: (
                not ProcessedMessage.objects.filter(status__in=["RECEIVED", "PROCESSING"]).exists()
                and ProcessedMessage.objects.count() == total
            ),
            timeout=120,
            interval=0.5,
            message="all to finish",
        )
    finally:
        store.stop()
    assert worker.alive()
    output = worker.output()
    assert "Traceback" not in output, output[-3000:]
    processed = ProcessedMessage.objects.filter(status="PROCESSED").count()
    failed = DeadLetter.objects.filter(stage="NOTIFY_SALES")
    assert processed + failed.count() == total
    assert processed > 0
    # A message fails only by spending its attempts on the CRM's 500s, never on Redis.
    assert all("500" in entry.error_message for entry in failed), [e.error_message for e in failed]
