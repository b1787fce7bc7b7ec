"""Action executors against real Postgres and a real HTTP server standing in for the sales webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from werkzeug import Request, Response

import whatsapp
from leads.models import (
    Business,
    CallbackRequest,
    Lead,
    Order,
    OrderLine,
    Product,
    ReviewFlag,
    SalesNotification,
    SupportTicket,
)
from tests.support.events import encode, event
from whatsapp.actions.base import ActionContext, PermanentActionError, RetryableActionError
from whatsapp.actions.registry import executors, get
from whatsapp.contracts.result import parse_event

pytestmark = pytest.mark.django_db

SECRET = "whsec-test-9f8e7d6c5b4a"
HOOK = "/hooks/sales"


@pytest.fixture
def lead(business: Business) -> Lead:
    return Lead.objects.create(lead_id="lead-123", business=business, wa_id="15550123456", customer_name="Ana")


@pytest.fixture
def webhook_business(business: Business, httpserver) -> Business:
    business.sales_webhook_url = httpserver.url_for(HOOK)
    business.sales_webhook_secret = SECRET
    business.save()
    return business


def context(
    business: Business,
    lead: Lead,
    action: str,
    params: dict[str, Any],
    *,
    step_order: int = 1,
    saga_run: int = 1,
    processing_id: str = "p-1",
) -> ActionContext:
    return ActionContext(
        processing_id=processing_id,
        saga_run=saga_run,
        action=action,
        step_order=step_order,
        params=params,
        event=parse_event(encode(event(processing_id))),
        business=business,
        lead=lead,
    )


def execute(ctx: ActionContext) -> dict[str, Any]:
    """Run as the saga does: inside a transaction it opened, unless the executor calls an
    outside service (not transactional), which the saga runs with none open."""
    executor = get(ctx.action)
    if executor.transactional:
        with transaction.atomic():
            result = executor.execute(ctx)
    else:
        result = executor.execute(ctx)
    json.dumps(result)  # results go into a JSONField, so they must be JSON-safe
    return result


def compensate(ctx: ActionContext, result: dict[str, Any]) -> dict[str, Any]:
    executor = get(ctx.action)
    if executor.transactional:
        with transaction.atomic():
            undone = executor.compensate(ctx, result)
    else:
        undone = executor.compensate(ctx, result)
    json.dumps(undone)
    return undone


def stock(sku: str = "SD-01") -> int:
    return Product.objects.get(sku=sku).stock


def order_context(business: Business, lead: Lead, *lines: tuple[str, int], **kwargs: Any) -> ActionContext:
    params = {"lines": [{"sku": sku, "quantity": quantity} for sku, quantity in lines]}
    return context(business, lead, "CREATE_ORDER", params, **kwargs)


# --- registry -----------------------------------------------------------------


def test_every_planned_action_has_an_executor():
    assert executors.names() == [
        "CREATE_ORDER",
        "CREATE_SUPPORT_TICKET",
        "FLAG_FOR_REVIEW",
        "NOTIFY_SALES",
        "SCHEDULE_CALL",
    ]
    for name in executors.names():
        assert get(name).name == name
    with pytest.raises(LookupError, match="CREATE_ORDER"):
        get("SEND_FLOWERS")


def test_each_action_name_is_written_once():
    """In its executor's class: plans name the class, so a second spelling is a typo in waiting."""
    sources = {
        path: path.read_text()
        for folder in ("actions", "handlers")
        for path in (Path(whatsapp.__file__).parent / folder).glob("*.py")
    }
    for name in executors.names():
        written = [path.name for path, text in sources.items() for _ in range(text.count(f'"{name}"'))]
        assert written == [f"{name.lower()}.py"], name


# --- CREATE_ORDER -------------------------------------------------------------


def test_order_is_priced_from_the_catalog_and_takes_stock(business, lead):
    ctx = order_context(business, lead, ("SD-01", 2))
    result = execute(ctx)

    order = Order.objects.get()
    assert result == {"order_id": order.pk, "reference": f"ORD-{order.pk:06d}", "total": "13.00", "currency": "USD"}
    assert (order.status, order.total, order.reference) == (Order.Status.CREATED, Decimal("13.00"), result["reference"])
    assert (order.processing_id, order.saga_run, order.idempotency_key) == ("p-1", 1, "p-1:1:1:CREATE_ORDER")
    line = OrderLine.objects.get()
    assert (line.sku, line.name, line.quantity, line.unit_price, line.line_total) == (
        "SD-01",
        "sourdough loaf",
        2,
        Decimal("6.50"),
        Decimal("13.00"),
    )
    assert stock() == 498


def test_order_twice_with_the_same_context_is_one_order(business, lead):
    ctx = order_context(business, lead, ("SD-01", 2))
    first = execute(ctx)
    second = execute(ctx)
    assert first == second
    assert Order.objects.count() == 1
    assert OrderLine.objects.count() == 1
    assert stock() == 498


def test_another_saga_run_is_another_order(business, lead):
    execute(order_context(business, lead, ("SD-01", 2)))
    execute(order_context(business, lead, ("SD-01", 3), saga_run=2))
    assert Order.objects.count() == 2
    assert stock() == 495


def test_order_compensation_gives_stock_back_once(business, lead):
    ctx = order_context(business, lead, ("SD-01", 5))
    result = execute(ctx)
    assert stock() == 495

    compensate(ctx, result)
    compensate(ctx, result)

    assert Order.objects.get().status == Order.Status.CANCELLED
    assert stock() == 500
    # A redelivered execute after the undo must not take the stock again.
    assert execute(ctx) == result
    assert stock() == 500


def test_insufficient_stock_is_permanent_and_takes_nothing(business, lead):
    Product.objects.create(business=business, sku="RY-02", name="rye loaf", price="4.25", stock=1)
    ctx = order_context(business, lead, ("SD-01", 2), ("RY-02", 5))
    # Even if the caller catches the error and commits, the first line's stock is not taken.
    with transaction.atomic(), pytest.raises(PermanentActionError, match="insufficient stock for SKU RY-02"):
        get("CREATE_ORDER").execute(ctx)
    assert not Order.objects.exists()
    assert (stock("SD-01"), stock("RY-02")) == (500, 1)


def test_exactly_the_remaining_stock_can_be_ordered(business, lead):
    Product.objects.filter(sku="SD-01").update(stock=3)
    execute(order_context(business, lead, ("SD-01", 3)))
    assert stock() == 0
    with pytest.raises(PermanentActionError, match="insufficient stock"):
        execute(order_context(business, lead, ("SD-01", 1), step_order=2))


def test_unknown_sku_is_permanent(business, lead):
    other = Business.objects.create(business_id="other-shop", tenant_id="tenant-other", display_name="Other")
    Product.objects.create(business=other, sku="OT-01", name="not ours", price="1.00", stock=10)
    with pytest.raises(PermanentActionError, match="unknown SKU for this business: OT-01"):
        execute(order_context(business, lead, ("SD-01", 1), ("OT-01", 1)))
    assert stock() == 500
    assert Product.objects.get(sku="OT-01").stock == 10


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"lines": []},
        {"lines": [{"quantity": 1}]},
        {"lines": [{"sku": "SD-01", "quantity": 0}]},
        {"lines": [{"sku": "SD-01", "quantity": "2"}]},
        {"lines": ["SD-01"]},
    ],
)
def test_malformed_order_params_are_permanent(business, lead, params):
    with pytest.raises(PermanentActionError):
        execute(context(business, lead, "CREATE_ORDER", params))
    assert not Order.objects.exists()


def test_multi_line_order_totals_all_lines(business, lead):
    Product.objects.create(business=business, sku="CR-03", name="croissant", price="2.20", stock=40)
    result = execute(order_context(business, lead, ("SD-01", 2), ("CR-03", 3)))
    assert result["total"] == "19.60"
    assert (stock("SD-01"), stock("CR-03")) == (498, 37)
    assert Order.objects.get().lines.count() == 2


# --- CREATE_SUPPORT_TICKET ----------------------------------------------------


@pytest.mark.parametrize(
    ("severity", "priority"),
    [
        ("low", "LOW"),
        ("medium", "NORMAL"),
        ("high", "HIGH"),
        (None, "NORMAL"),
    ],
)
def test_ticket_priority_follows_severity(business, lead, severity, priority):
    result = execute(context(business, lead, "CREATE_SUPPORT_TICKET", {"severity": severity, "order_reference": None}))
    ticket = SupportTicket.objects.get()
    assert result == {"ticket_id": ticket.pk, "priority": priority, "order_id": None, "order_reference": None}
    assert (ticket.status, ticket.priority, ticket.idempotency_key) == (
        SupportTicket.Status.OPEN,
        priority,
        "p-1:1:1:CREATE_SUPPORT_TICKET",
    )


def test_ticket_links_the_named_order_of_the_same_business(business, lead):
    order_result = execute(order_context(business, lead, ("SD-01", 1), processing_id="p-0"))
    params = {"severity": "high", "order_reference": order_result["reference"]}
    result = execute(context(business, lead, "CREATE_SUPPORT_TICKET", params))
    ticket = SupportTicket.objects.get()
    assert ticket.order_id == order_result["order_id"]
    assert result["order_id"] == order_result["order_id"]
    assert ticket.order_reference == order_result["reference"]


def test_ticket_does_not_link_another_business_order(business, lead):
    other = Business.objects.create(business_id="other-shop", tenant_id="tenant-other", display_name="Other")
    other_lead = Lead.objects.create(lead_id="lead-9", business=other, wa_id="15550000000")
    Product.objects.create(business=other, sku="OT-01", name="not ours", price="1.00", stock=10)
    foreign = execute(order_context(other, other_lead, ("OT-01", 1), processing_id="p-9"))

    params = {"severity": "low", "order_reference": foreign["reference"]}
    execute(context(business, lead, "CREATE_SUPPORT_TICKET", params))
    ticket = SupportTicket.objects.get(business=business)
    assert ticket.order_id is None
    assert ticket.order_reference == foreign["reference"]  # the text is kept for a human


def test_unmatched_reference_is_kept_as_text(business, lead):
    execute(context(business, lead, "CREATE_SUPPORT_TICKET", {"severity": "medium", "order_reference": "ORD-999999"}))
    ticket = SupportTicket.objects.get()
    assert (ticket.order_id, ticket.order_reference) == (None, "ORD-999999")


def test_ticket_twice_is_one_and_compensation_voids_once(business, lead):
    ctx = context(business, lead, "CREATE_SUPPORT_TICKET", {"severity": "high", "order_reference": None})
    result = execute(ctx)
    assert execute(ctx) == result
    assert SupportTicket.objects.count() == 1

    first = compensate(ctx, result)
    second = compensate(ctx, result)
    assert (first["voided"], second["voided"]) == (True, False)
    assert SupportTicket.objects.get().status == SupportTicket.Status.VOID


def test_bad_severity_is_permanent(business, lead):
    with pytest.raises(PermanentActionError, match="severity"):
        execute(context(business, lead, "CREATE_SUPPORT_TICKET", {"severity": "catastrophic"}))
    assert not SupportTicket.objects.exists()


# --- FLAG_FOR_REVIEW ----------------------------------------------------------


def test_flag_marks_the_lead_for_review(business, lead):
    ctx = context(business, lead, "FLAG_FOR_REVIEW", {"reason": "low_confidence", "confidence": 0.41})
    result = execute(ctx)
    assert execute(ctx) == result
    flag = ReviewFlag.objects.get()
    assert (flag.reason, flag.detail, flag.status) == ("low_confidence", {"confidence": 0.41}, ReviewFlag.Status.OPEN)
    assert result == {"flag_id": flag.pk, "reason": "low_confidence"}
    lead.refresh_from_db()
    assert lead.needs_review is True


def test_clearing_a_flag_keeps_review_while_another_is_open(business, lead):
    first = context(business, lead, "FLAG_FOR_REVIEW", {"reason": "low_confidence"}, processing_id="p-1")
    second = context(business, lead, "FLAG_FOR_REVIEW", {"reason": "angry_customer"}, processing_id="p-2")
    first_result, second_result = execute(first), execute(second)

    compensate(first, first_result)
    lead.refresh_from_db()
    assert lead.needs_review is True
    assert ReviewFlag.objects.get(pk=first_result["flag_id"]).status == ReviewFlag.Status.CLEARED

    compensate(second, second_result)
    compensate(second, second_result)
    lead.refresh_from_db()
    assert lead.needs_review is False
    assert set(ReviewFlag.objects.values_list("status", flat=True)) == {ReviewFlag.Status.CLEARED}


def test_flag_needs_a_reason(business, lead):
    with pytest.raises(PermanentActionError, match="reason"):
        execute(context(business, lead, "FLAG_FOR_REVIEW", {"reason": "  "}))
    lead.refresh_from_db()
    assert lead.needs_review is False


# --- SCHEDULE_CALL ------------------------------------------------------------


def test_callback_is_requested_at_the_preferred_time(business, lead):
    ctx = context(business, lead, "SCHEDULE_CALL", {"preferred_time": "2026-11-27T15:00:00+02:00"})
    result = execute(ctx)
    assert execute(ctx) == result
    callback = CallbackRequest.objects.get()
    assert result == {"callback_id": callback.pk, "preferred_time": "2026-11-27T13:00:00+00:00"}
    assert callback.status == CallbackRequest.Status.REQUESTED

    compensate(ctx, result)
    compensate(ctx, result)
    callback.refresh_from_db()
    assert callback.status == CallbackRequest.Status.CANCELLED
    assert CallbackRequest.objects.count() == 1


@pytest.mark.parametrize(
    "value", [None, "", "friday afternoon", "2026-13-45T10:00:00+00:00", "2026-11-27T15:00:00", 17]
)
def test_bad_preferred_time_is_permanent(business, lead, value):
    with pytest.raises(PermanentActionError, match="preferred_time"):
        execute(context(business, lead, "SCHEDULE_CALL", {"preferred_time": value}))
    assert not CallbackRequest.objects.exists()


# --- NOTIFY_SALES -------------------------------------------------------------


def notify_context(business: Business, lead: Lead, kind: str = "order", **kwargs: Any) -> ActionContext:
    return context(business, lead, "NOTIFY_SALES", {"kind": kind}, step_order=2, **kwargs)


def posts(httpserver) -> list[Request]:
    return [request for request, _ in httpserver.log]


def assert_signed(request: Request) -> None:
    """X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">, t close to now."""
    t, v1 = request.headers["X-Signature"].split(",")
    assert t.startswith("t=") and v1.startswith("v1=")
    assert abs(time.time() - int(t[2:])) < 60
    signed = t[2:].encode() + b"." + request.get_data()
    expected = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(v1[3:], expected)


@pytest.mark.parametrize("status", [200, 201])
def test_notification_is_posted_signed_and_summarised(webhook_business, lead, httpserver, status):
    order = execute(order_context(webhook_business, lead, ("SD-01", 2)))
    httpserver.expect_request(HOOK, method="POST").respond_with_json({"id": "n-1"}, status=status)
    ctx = notify_context(webhook_business, lead)

    result = execute(ctx)

    notification = SalesNotification.objects.get()
    assert result == {"notification_id": notification.pk, "status": "SENT", "kind": "order", "http_status": status}
    assert (notification.status, notification.http_status, notification.attempts) == ("SENT", status, 1)
    assert notification.webhook_url == webhook_business.sales_webhook_url
    [request] = posts(httpserver)
    assert request.headers["Idempotency-Key"] == "p-1:1:2:NOTIFY_SALES"
    assert request.headers["Content-Type"] == "application/json"
    assert_signed(request)
    body = request.get_json()
    assert body == notification.payload
    assert body["processing_id"] == "p-1"
    assert (body["business_id"], body["lead_id"], body["kind"], body["intent"]) == (
        "acme-bakery",
        "lead-123",
        "order",
        "ORDER_REQUEST",
    )
    assert body["order"] == {"reference": order["reference"], "total": "13.00", "currency": "USD"}
    assert body["created_at"]
    raw = request.get_data(as_text=True)
    assert "sourdough loaves for Friday" not in raw  # no customer message text
    assert "15550123456" not in raw  # no phone number
    assert SECRET not in raw


def test_notification_twice_is_one_post(webhook_business, lead, httpserver):
    httpserver.expect_request(HOOK, method="POST").respond_with_data("", status=204)
    ctx = notify_context(webhook_business, lead, kind="pricing")
    first = execute(ctx)
    second = execute(ctx)
    assert first == second
    assert len(posts(httpserver)) == 1
    assert SalesNotification.objects.count() == 1
    assert posts(httpserver)[0].get_json()["order"] is None


def test_notification_without_webhook_is_skipped(business, lead, httpserver):
    result = execute(notify_context(business, lead, kind="callback"))
    assert result["status"] == "SKIPPED"
    assert SalesNotification.objects.get().status == SalesNotification.Status.SKIPPED
    assert posts(httpserver) == []


def test_notification_without_secret_is_not_signed(webhook_business, lead, httpserver):
    webhook_business.sales_webhook_secret = ""
    webhook_business.save()
    httpserver.expect_request(HOOK, method="POST").respond_with_data("ok")
    execute(notify_context(webhook_business, lead))
    [request] = posts(httpserver)
    assert "X-Signature" not in request.headers
    assert request.headers["Idempotency-Key"] == "p-1:1:2:NOTIFY_SALES"


@pytest.mark.parametrize("status", [400, 422])
def test_client_errors_are_permanent_and_never_show_the_secret(webhook_business, lead, httpserver, status):
    httpserver.expect_request(HOOK, method="POST").respond_with_json(
        {"error": "invalid payload", "echo": SECRET}, status=status
    )
    with pytest.raises(PermanentActionError) as caught:
        execute(notify_context(webhook_business, lead))
    assert str(status) in str(caught.value)
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)
    assert not SalesNotification.objects.exists()  # a failed send leaves nothing behind


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retryable(webhook_business, lead, httpserver, status):
    httpserver.expect_request(HOOK, method="POST").respond_with_data("upstream down", status=status)
    with pytest.raises(RetryableActionError) as caught:
        execute(notify_context(webhook_business, lead))
    assert str(status) in str(caught.value)
    assert caught.value.retry_after is None
    assert SECRET not in str(caught.value)
    assert not SalesNotification.objects.exists()


def test_429_honours_retry_after(webhook_business, lead, httpserver):
    httpserver.expect_request(HOOK, method="POST").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "7"}
    )
    with pytest.raises(RetryableActionError, match="429") as caught:
        execute(notify_context(webhook_business, lead))
    assert caught.value.retry_after == 7.0


def test_read_timeout_is_retryable(webhook_business, lead, httpserver, settings):
    settings.SALES_WEBHOOK_DEADLINE_SECONDS = 0.3

    def slow(request: Request) -> Response:
        time.sleep(1.2)
        return Response("too late", status=200)

    httpserver.expect_request(HOOK, method="POST").respond_with_handler(slow)
    started = time.monotonic()
    with pytest.raises(RetryableActionError, match="timed out") as caught:
        execute(notify_context(webhook_business, lead))
    assert time.monotonic() - started < 1.1
    assert SECRET not in str(caught.value)
    assert not SalesNotification.objects.exists()
    # Let the server finish the abandoned request, or it lands in the next test's log.
    deadline = time.monotonic() + 5
    while not httpserver.log and time.monotonic() < deadline:
        time.sleep(0.05)


def test_refused_connection_is_retryable(webhook_business, lead):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    webhook_business.sales_webhook_url = f"http://127.0.0.1:{port}/hooks/sales"
    webhook_business.save()
    with pytest.raises(RetryableActionError, match="could not be reached"):
        execute(notify_context(webhook_business, lead))
    # Not delivered: no row is left claiming it is being sent, so the retry starts afresh.
    assert not SalesNotification.objects.exists()


def test_retry_after_a_failure_sends_with_the_same_key(webhook_business, lead, httpserver):
    httpserver.expect_ordered_request(HOOK, method="POST").respond_with_data("busy", status=503)
    httpserver.expect_ordered_request(HOOK, method="POST").respond_with_data("ok", status=200)
    ctx = notify_context(webhook_business, lead)
    with pytest.raises(RetryableActionError):
        execute(ctx)
    assert execute(ctx)["status"] == "SENT"
    first, second = posts(httpserver)
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"] == ctx.idempotency_key


def test_compensation_posts_one_retraction(webhook_business, lead, httpserver):
    httpserver.expect_request(HOOK, method="POST").respond_with_data("ok")
    ctx = notify_context(webhook_business, lead)
    result = execute(ctx)

    compensate(ctx, result)
    compensate(ctx, result)

    _sent, retraction = posts(httpserver)
    assert retraction.headers["Idempotency-Key"] == f"{ctx.idempotency_key}:retract"
    assert_signed(retraction)
    assert retraction.get_json()["type"] == "retraction"
    assert retraction.get_json()["idempotency_key"] == ctx.idempotency_key
    notification = SalesNotification.objects.get()
    assert (notification.status, notification.attempts) == (SalesNotification.Status.RETRACTED, 2)


def test_compensating_a_skipped_notification_sends_nothing(business, lead, httpserver):
    ctx = notify_context(business, lead)
    result = execute(ctx)
    assert compensate(ctx, result)["status"] == "SKIPPED"
    assert posts(httpserver) == []


def test_failing_retraction_is_classified_like_a_send(webhook_business, lead, httpserver):
    httpserver.expect_ordered_request(HOOK, method="POST").respond_with_data("ok")
    httpserver.expect_ordered_request(HOOK, method="POST").respond_with_data("down", status=503)
    httpserver.expect_ordered_request(HOOK, method="POST").respond_with_data("gone", status=410)
    ctx = notify_context(webhook_business, lead)
    result = execute(ctx)

    with pytest.raises(RetryableActionError, match="503"):
        compensate(ctx, result)
    assert SalesNotification.objects.get().status == SalesNotification.Status.SENT

    # A permanent failure is raised but recorded, for whoever commits the compensation outcome.
    with transaction.atomic(), pytest.raises(PermanentActionError, match="410") as caught:
        get("NOTIFY_SALES").compensate(ctx, result)
    assert SECRET not in str(caught.value)
    assert SalesNotification.objects.get().status == SalesNotification.Status.RETRACTION_FAILED
    assert len(posts(httpserver)) == 3


def test_unknown_kind_is_permanent(webhook_business, lead, httpserver):
    with pytest.raises(PermanentActionError, match="kind"):
        execute(context(webhook_business, lead, "NOTIFY_SALES", {"kind": "gossip"}))
    assert posts(httpserver) == []
