"""The pipeline end to end: Kafka -> ingest -> Celery chain -> effects in
Postgres, with a real worker process. The sales webhook is a local HTTP
server speaking plain JSON over HTTP, including its failures."""

from __future__ import annotations

import itertools
import json
import signal
from datetime import datetime

import pytest
from werkzeug import Response

from dlq.models import DeadLetter
from dlq.requeue import requeue
from leads.models import CallbackRequest, Lead, Order, Product, ReviewFlag, SalesNotification, SupportTicket
from tests.support.events import event, later_iso
from tests.support.processes import wait_until
from whatsapp.models import ProcessedMessage, SagaStep

pytestmark = pytest.mark.django_db(transaction=True)

WHEN = later_iso()


def steps_of(pid: str, run: int = 1) -> list[tuple[str, str]]:
    return list(
        SagaStep.objects.filter(message__processing_id=pid, saga_run=run)
        .order_by("order")
        .values_list("action", "status")
    )


# (processing_id, event overrides, expected actions, reply fragment, lead state after)
CASES = [
    (
        "order-ok",
        {"intent": "ORDER_REQUEST", "confidence": 0.85},
        ["CREATE_ORDER", "NOTIFY_SALES"],
        "Total: 13.00 USD",
        "CONVERTED",
    ),
    ("order-low", {"intent": "ORDER_REQUEST", "confidence": 0.84}, ["FLAG_FOR_REVIEW"], "A member of our team", "NEW"),
    ("order-noent", {"intent": "ORDER_REQUEST", "entities": {}}, ["FLAG_FOR_REVIEW"], "A member of our team", "NEW"),
    (
        "order-unknown-sku",
        {"intent": "ORDER_REQUEST", "entities": {"products": [{"sku": "NOPE", "name": "cake"}]}},
        ["FLAG_FOR_REVIEW"],
        "will confirm your order",
        "QUALIFIED",
    ),
    (
        "pricing-ok",
        {"intent": "PRICING_INQUIRY", "confidence": 0.7},
        ["NOTIFY_SALES"],
        "sourdough loaf: 6.50 USD",
        "CONTACTED",
    ),
    (
        "pricing-low",
        {"intent": "PRICING_INQUIRY", "confidence": 0.69},
        ["FLAG_FOR_REVIEW"],
        "A member of our team",
        "NEW",
    ),
    (
        "pricing-es",
        {"intent": "PRICING_INQUIRY", "entities": {"products": [{"sku": "SD-01", "name": "pan"}], "language": "es"}},
        ["NOTIFY_SALES"],
        "Estos son los precios",
        "CONTACTED",
    ),
    # A product no other case orders: stock read while an order takes it would be a race.
    (
        "avail-ok",
        {
            "intent": "AVAILABILITY_INQUIRY",
            "confidence": 0.9,
            "entities": {"products": [{"sku": "BG-03", "name": "baguette"}]},
        },
        [],
        "baguette: in stock (40 available)",
        "CONTACTED",
    ),
    (
        "avail-noent",
        {"intent": "AVAILABILITY_INQUIRY", "entities": {}},
        ["FLAG_FOR_REVIEW"],
        "A member of our team",
        "NEW",
    ),
    (
        "complaint-ok",
        {"intent": "COMPLAINT", "confidence": 0.6, "entities": {"severity": "low"}},
        ["CREATE_SUPPORT_TICKET"],
        "support ticket",
        "NEW",
    ),
    ("complaint-low", {"intent": "COMPLAINT", "confidence": 0.59}, ["FLAG_FOR_REVIEW"], "A member of our team", "NEW"),
    (
        "complaint-high",
        {"intent": "COMPLAINT", "entities": {"severity": "high", "language": "pt-BR"}},
        ["CREATE_SUPPORT_TICKET", "FLAG_FOR_REVIEW", "NOTIFY_SALES"],
        "urgente",
        "NEW",
    ),
    (
        "call-ok",
        {"intent": "SCHEDULE_CALL", "confidence": 0.7, "entities": {"preferred_time": WHEN}},
        ["SCHEDULE_CALL", "NOTIFY_SALES"],
        WHEN[:10],
        "QUALIFIED",
    ),
    ("call-noent", {"intent": "SCHEDULE_CALL", "entities": {}}, ["FLAG_FOR_REVIEW"], "A member of our team", "NEW"),
    (
        "call-low",
        {"intent": "SCHEDULE_CALL", "confidence": 0.5, "entities": {"preferred_time": WHEN}},
        ["FLAG_FOR_REVIEW"],
        "A member of our team",
        "NEW",
    ),
    ("unknown", {"intent": "UNKNOWN", "confidence": 0.99}, ["FLAG_FOR_REVIEW"], "A member of our team", "NEW"),
    (
        "unrecognised",
        {"intent": "REFUND_REQUEST", "confidence": 0.99},
        ["FLAG_FOR_REVIEW"],
        "A member of our team",
        "NEW",
    ),
]


def test_every_intent_produces_its_documented_plan(pipeline, business):
    Product.objects.create(business=business, sku="BG-03", name="baguette", price="3.10", stock=40)
    # One customer, so one lead, per case: each lead state shows that case alone.
    pipeline.send(
        [
            event(pid, lead_id=f"lead-{pid}", customer={"wa_id": f"1555010{n:04d}", "name": "Ana"}, **overrides)
            for n, (pid, overrides, *_) in enumerate(CASES)
        ]
    )
    pipeline.wait_settled(len(CASES))

    problems = []
    for pid, _, actions, reply, state in CASES:
        row = ProcessedMessage.objects.get(processing_id=pid)
        got_steps = steps_of(pid)
        lead = Lead.objects.get(aliases__alias=f"lead-{pid}")
        if row.status != "PROCESSED":
            problems.append(f"{pid}: status {row.status} ({row.last_error})")
        if got_steps != [(a, "SUCCEEDED") for a in actions]:
            problems.append(f"{pid}: steps {got_steps}, expected {actions}")
        if reply not in row.reply_text:
            problems.append(f"{pid}: reply {row.reply_text!r} lacks {reply!r}")
        if lead.state != state:
            problems.append(f"{pid}: lead state {lead.state}, expected {state}")
        kinds = list(lead.activities.values_list("kind", flat=True))
        if kinds[0] != "message_received" or kinds[-1] != "message_processed":
            problems.append(f"{pid}: activities {kinds}")
    assert not problems, "\n".join(problems)

    order = Order.objects.get()
    assert (order.status, str(order.total)) == ("CREATED", "13.00")
    assert Product.objects.get(sku="SD-01").stock == 498
    assert SupportTicket.objects.filter(status="OPEN").count() == 2
    assert CallbackRequest.objects.get().preferred_time == datetime.fromisoformat(WHEN)
    assert Lead.objects.filter(needs_review=True).count() == sum(1 for c in CASES if "FLAG_FOR_REVIEW" in c[2])
    # No webhook configured: notifications are recorded, not sent.
    assert set(SalesNotification.objects.values_list("status", flat=True)) == {"SKIPPED"}


def test_non_retryable_failure_in_third_action_compensates_in_reverse_then_requeue(pipeline, business, httpserver):
    calls = []

    def sales(request):
        calls.append(json.loads(request.data))
        if len([c for c in calls if c.get("type") != "retraction"]) == 1:
            return Response(json.dumps({"error": "unknown lead"}), status=422, content_type="application/json")
        return Response(json.dumps({"ok": True}), status=200, content_type="application/json")

    httpserver.expect_request("/sales", method="POST").respond_with_handler(sales)
    business.sales_webhook_url = httpserver.url_for("/sales")
    business.save()

    pipeline.send([event("complaint-1", intent="COMPLAINT", entities={"severity": "high"})])
    pipeline.wait_settled(1)

    row = ProcessedMessage.objects.get(processing_id="complaint-1")
    assert row.status == "FAILED"
    assert steps_of("complaint-1") == [
        ("CREATE_SUPPORT_TICKET", "COMPENSATED"),
        ("FLAG_FOR_REVIEW", "COMPENSATED"),
        ("NOTIFY_SALES", "FAILED"),
    ]
    ticket_step, flag_step = SagaStep.objects.filter(
        message=row, action__in=["CREATE_SUPPORT_TICKET", "FLAG_FOR_REVIEW"]
    ).order_by("order")
    assert flag_step.updated_at < ticket_step.updated_at, "compensated in reverse order"
    assert SupportTicket.objects.get().status == "VOID"
    assert ReviewFlag.objects.get().status == "CLEARED"
    entry = DeadLetter.objects.get(processing_id="complaint-1")
    assert (entry.stage, entry.reason, entry.status, entry.attempts) == ("NOTIFY_SALES", "non_retryable", "OPEN", 1)
    assert [s["status"] for s in entry.saga_state["steps"]] == ["COMPENSATED", "COMPENSATED", "FAILED"]
    assert "422" in entry.error_message and "Traceback" in entry.traceback

    requeue(entry.pk, by="ops@example.com")
    wait_until(
        lambda: ProcessedMessage.objects.get(processing_id="complaint-1").status == "PROCESSED",
        timeout=60,
        message="requeued run to finish",
    )
    entry.refresh_from_db()
    assert entry.status == "REQUEUED" and entry.requeue_history[0]["by"] == "ops@example.com"
    assert steps_of("complaint-1", run=2) == [
        ("CREATE_SUPPORT_TICKET", "SUCCEEDED"),
        ("FLAG_FOR_REVIEW", "SUCCEEDED"),
        ("NOTIFY_SALES", "SUCCEEDED"),
    ]
    assert SupportTicket.objects.filter(status="OPEN").count() == 1
    assert SupportTicket.objects.count() == 2  # the voided one of run 1 and the live one of run 2
    assert ReviewFlag.objects.filter(status="OPEN").count() == 1
    assert DeadLetter.objects.count() == 1


def test_retryable_failure_that_clears_succeeds_on_third_attempt(pipeline, business, httpserver):
    answers = iter([503, 503])

    def sales(request):
        return Response("{}", status=next(answers, 200), content_type="application/json")

    httpserver.expect_request("/sales", method="POST").respond_with_handler(sales)
    business.sales_webhook_url = httpserver.url_for("/sales")
    business.save()

    pipeline.send([event("order-retry")])
    pipeline.wait_settled(1, timeout=90)
    assert ProcessedMessage.objects.get(processing_id="order-retry").status == "PROCESSED"
    step = SagaStep.objects.get(message__processing_id="order-retry", action="NOTIFY_SALES")
    assert (step.status, step.attempts) == ("SUCCEEDED", 3)
    assert Order.objects.count() == 1 and Order.objects.get().status == "CREATED"
    assert SalesNotification.objects.get().status == "SENT"
    keys = {r.headers["Idempotency-Key"] for r, _ in httpserver.log}
    assert len(httpserver.log) == 3 and len(keys) == 1


@pytest.mark.slow
def test_retryable_failure_that_never_clears_is_dead_lettered_after_4_attempts(pipeline, business, httpserver):
    httpserver.expect_request("/sales", method="POST").respond_with_data("unavailable", status=503)
    business.sales_webhook_url = httpserver.url_for("/sales")
    business.save()

    pipeline.send([event("order-doomed")])
    pipeline.wait_settled(1, timeout=120)

    step = SagaStep.objects.get(message__processing_id="order-doomed", action="NOTIFY_SALES")
    assert (step.status, step.attempts) == ("FAILED", 4)
    started = [datetime.fromisoformat(a["at"]) for a in step.attempt_log]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(started)]
    print("delays between attempts:", [round(g, 2) for g in gaps])
    for gap, nominal in zip(gaps, (1, 5, 15), strict=False):
        assert nominal * 0.85 <= gap <= nominal * 1.15 + 1.5, gaps
    entry = DeadLetter.objects.get(processing_id="order-doomed")
    assert (entry.stage, entry.reason, entry.attempts) == ("NOTIFY_SALES", "retries_exhausted", 4)
    assert Order.objects.get().status == "CANCELLED"
    assert Product.objects.get(sku="SD-01").stock == 500


@pytest.mark.slow
def test_worker_killed_mid_action_is_redelivered_and_acts_once(
    bootstrap, topic, start_ingest, start_worker, business, httpserver
):
    import threading

    entered = threading.Event()
    release = threading.Event()

    def slow_sales(request):
        entered.set()
        release.wait(20)
        return Response("{}", status=200, content_type="application/json")

    httpserver.expect_request("/sales", method="POST").respond_with_handler(slow_sales)
    business.sales_webhook_url = httpserver.url_for("/sales")
    business.save()

    worker = start_worker(concurrency=1, name="doomed")
    start_ingest(topic)
    from tests.support import kafka
    from tests.support.events import encode

    kafka.produce(bootstrap, topic, [(b"lead-123", encode(event("order-killed")))])
    assert entered.wait(90), worker.output()[-3000:]
    worker.kill(signal.SIGKILL)
    worker.wait(10)
    release.set()
    assert SagaStep.objects.get(message__processing_id="order-killed", action="NOTIFY_SALES").status == "PENDING"

    start_worker(concurrency=1, name="replacement")
    wait_until(
        lambda: ProcessedMessage.objects.get(processing_id="order-killed").status == "PROCESSED",
        timeout=120,
        message="the redelivered task to finish the message",
    )
    assert Order.objects.count() == 1
    assert SalesNotification.objects.count() == 1
    assert Product.objects.get(sku="SD-01").stock == 498


@pytest.mark.slow
def test_failing_compensation_is_retried_then_recorded(
    bootstrap, topic, start_ingest, start_worker, business, httpserver
):
    """NOTIFY_SALES succeeds, the next step fails for good, and the CRM then
    refuses the retraction with 503 every time: the retraction is tried
    again (1 + 3 retries) and the dead letter says COMPENSATION_FAILED."""

    def crm(request):
        body = json.loads(request.data)
        return Response("{}", status=503 if body.get("type") == "retraction" else 200, content_type="application/json")

    httpserver.expect_request("/sales", method="POST").respond_with_handler(crm)
    business.sales_webhook_url = httpserver.url_for("/sales")
    business.save()
    start_worker(env={"WHATSAPP_PLUGINS": "tests.support.plugins"})
    start_ingest(topic)
    from tests.support import kafka
    from tests.support.events import encode

    kafka.produce(
        bootstrap,
        topic,
        [(b"lead-123", encode(event("drill-1", intent="COMPLAINT", entities={"drill": "compensation"})))],
    )
    wait_until(
        lambda: ProcessedMessage.objects.filter(processing_id="drill-1", status="FAILED").exists(),
        timeout=120,
        message="the run to fail and be dead-lettered",
    )

    assert steps_of("drill-1") == [("NOTIFY_SALES", "COMPENSATION_FAILED"), ("ALWAYS_FAIL", "FAILED")]
    notify = SagaStep.objects.get(message__processing_id="drill-1", action="NOTIFY_SALES")
    assert notify.compensation_attempts == 4 and "503" in notify.compensation_error
    retractions = [r for r, _ in httpserver.log if json.loads(r.data).get("type") == "retraction"]
    assert len(retractions) == 4
    entry = DeadLetter.objects.get(processing_id="drill-1")
    assert (entry.stage, entry.reason) == ("ALWAYS_FAIL", "non_retryable")
    assert [s["status"] for s in entry.saga_state["steps"]] == ["COMPENSATION_FAILED", "FAILED"]
