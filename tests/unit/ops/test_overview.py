"""The admin's live overview through Django's test client, on the real Postgres and Redis:
the figures its JSON gives for rows made relative to now, who may see it, and what a poll
costs in queries. The browser test (tests/integration/test_overview_browser.py) watches
the page redraw itself."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.utils import timezone

from core import breakers
from dlq.models import DeadLetter
from whatsapp.models import InboundMessage, ProcessedMessage, WebhookDelivery
from whatsapp.ops.collectors import ScrapeTimeCollector

pytestmark = pytest.mark.django_db

DATA = "/admin/overview/data.json"
PAGE = "/admin/overview/"
SECRET = "whsec-DO-NOT-SHOW-77aa"
BREAKER = "webhook:https://crm.example.com:443"


@pytest.fixture(autouse=True)
def fresh_scrape():
    """Each test reads the scrape-time gauges itself, never what an earlier test left in the cache."""
    ScrapeTimeCollector.forget()
    yield
    ScrapeTimeCollector.forget()


@pytest.fixture
def viewer(django_user_model):
    user = django_user_model.objects.create_user("ops", "ops@example.com", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=["view_processedmessage", "view_deadletter"]))
    return user


_seq = iter(range(1_000_000))


def inbox_row(status: str, *, finished_ago: float | None = None, **fields) -> ProcessedMessage:
    """An inbox row as ingest stores it and the pipeline finishes it, its times set relative to now."""
    n = next(_seq)
    row = ProcessedMessage.objects.create(
        processing_id=f"proc-{n}", business_id="biz-1", lead_id=f"lead-{n}", intent="ORDER_REQUEST", payload={}
    )
    now = timezone.now()
    update = {"status": status, **fields}
    if finished_ago is not None:
        update["finished_at"] = now - timedelta(seconds=finished_ago)
    ProcessedMessage.objects.filter(pk=row.pk).update(**update)
    row.refresh_from_db()
    return row


def dead_letter(reason: str, stage: str, *, ago: float = 0, status: str = DeadLetter.Status.OPEN) -> DeadLetter:
    entry = DeadLetter.objects.create(
        reason=reason, stage=stage, status=status, error_message=f"boom with {SECRET}", business_id="biz-1"
    )
    DeadLetter.objects.filter(pk=entry.pk).update(created_at=timezone.now() - timedelta(seconds=ago))
    return entry


def percentile_cont(values: list[float], p: float) -> float:
    """Postgres's percentile_cont: linear interpolation between the two nearest ranks."""
    ordered = sorted(values)
    position = p * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def bucket(data: dict, seconds_ago: float) -> int:
    """The chart's index of the minute that held `now - seconds_ago`."""
    at = timezone.now() - timedelta(seconds=seconds_ago)
    return data["per_minute"]["minutes"].index(int(at.replace(second=0, microsecond=0).timestamp()))


def test_messages_per_minute_count_what_finished_in_each_minute_of_the_last_hour(client, viewer):
    # Well inside their minutes, so a minute turning over during the test moves none of them.
    for _ in range(3):
        inbox_row("PROCESSED", finished_ago=150)
    inbox_row("PROCESSED", finished_ago=30 * 60)
    for _ in range(2):
        inbox_row("FAILED", finished_ago=5 * 60)
    inbox_row("PROCESSED", finished_ago=70 * 60)  # before the hour: not on the chart
    inbox_row("PROCESSING")  # not finished
    dead_letter("invalid_payload", "ingest", ago=5 * 60)
    dead_letter("non_retryable", "NOTIFY_SALES", ago=5 * 60, status=DeadLetter.Status.RESOLVED)
    dead_letter("invalid_payload", "ingest", ago=2 * 3600)

    client.force_login(viewer)
    response = client.get(DATA)
    assert response.status_code == 200
    data = response.json()
    per_minute = data["per_minute"]
    assert len(per_minute["minutes"]) == 60
    assert per_minute["minutes"] == sorted(per_minute["minutes"])
    assert per_minute["minutes"][-1] == int(timezone.now().replace(second=0, microsecond=0).timestamp())
    assert per_minute["processed"][bucket(data, 150)] == 3
    assert per_minute["processed"][bucket(data, 30 * 60)] == 1
    assert per_minute["failed"][bucket(data, 5 * 60)] == 2
    # Dead letters written, whatever they became since.
    assert per_minute["dead_lettered"][bucket(data, 5 * 60)] == 2
    assert per_minute["totals"] == {"processed": 4, "failed": 2, "dead_lettered": 2}
    assert data["in_flight"] == {"RECEIVED": 0, "WAITING": 0, "PROCESSING": 1}
    assert SECRET not in response.content.decode()


def test_latency_percentiles_from_the_kafka_timestamp_and_from_taking_in(client, viewer):
    end_to_end, pipeline = [], []
    for i in range(1, 21):
        # Kafka record i * 0.3 s before finish, taken in i * 0.1 s before finish.
        finished = timezone.now() - timedelta(minutes=3)
        inbox_row(
            "PROCESSED",
            kafka_timestamp=finished - timedelta(seconds=i * 0.3),
            received_at=finished - timedelta(seconds=i * 0.1),
            finished_at=finished,
        )
        end_to_end.append(i * 300.0)
        pipeline.append(i * 100.0)
    # A record whose timestamp no date holds: measured from taking in.
    finished = timezone.now() - timedelta(minutes=1)
    inbox_row(
        "PROCESSED",
        kafka_timestamp=None,
        kafka_timestamp_ms=-5,
        received_at=finished - timedelta(seconds=7),
        finished_at=finished,
    )
    end_to_end.append(7000.0)
    pipeline.append(7000.0)
    # Not counted: a requeued run, a failed message, one finished before the window.
    inbox_row("PROCESSED", finished_ago=60, received_at=timezone.now() - timedelta(hours=5), saga_run=2)
    inbox_row("FAILED", finished_ago=60, received_at=timezone.now() - timedelta(hours=5))
    inbox_row("PROCESSED", finished_ago=20 * 60, received_at=timezone.now() - timedelta(hours=5))

    client.force_login(viewer)
    latency = client.get(DATA).json()["latency"]
    assert latency["minutes"] == 15 and latency["count"] == 21
    for key, values in (("end_to_end_ms", end_to_end), ("pipeline_ms", pipeline)):
        for name, p in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            assert latency[key][name] == pytest.approx(percentile_cont(values, p), abs=0.5), (key, name)


def test_no_messages_gives_empty_percentiles_not_an_error(client, viewer):
    client.force_login(viewer)
    latency = client.get(DATA).json()["latency"]
    assert latency["count"] == 0
    assert latency["end_to_end_ms"] == {"p50": None, "p95": None, "p99": None}


def test_open_dead_letters_by_reason_and_stage_link_to_the_filtered_list(client, viewer):
    for _ in range(3):
        dead_letter("invalid_payload", "ingest")
    dead_letter("non_retryable", "NOTIFY_SALES")
    dead_letter("non_retryable", "NOTIFY_SALES", status=DeadLetter.Status.REQUEUED)
    dead_letter("retries_exhausted", "reply", status=DeadLetter.Status.RESOLVED)

    client.force_login(viewer)
    found = client.get(DATA).json()["dead_letters"]
    assert found["total"] == 4
    assert found["url"] == "/admin/dlq/deadletter/?status__exact=OPEN"
    assert [(g["reason"], g["stage"], g["count"]) for g in found["groups"]] == [
        ("invalid_payload", "ingest", 3),
        ("non_retryable", "NOTIFY_SALES", 1),
    ]
    link = found["groups"][1]["url"]
    assert link == "/admin/dlq/deadletter/?" + urlencode(
        {"status__exact": "OPEN", "reason__exact": "non_retryable", "stage__exact": "NOTIFY_SALES"}
    )
    # The link opens the DLQ list holding exactly those entries.
    listed = client.get(link)
    assert listed.status_code == 200
    assert listed.context["cl"].result_count == 1
    assert client.get(found["url"]).context["cl"].result_count == 4


def test_oldest_stuck_row_breakers_not_closed_and_the_webhook_and_outbox(client, viewer, settings):
    settings.SWEEP_STUCK_AFTER_SECONDS = 300
    stuck = inbox_row("PROCESSING", updated_at=timezone.now() - timedelta(minutes=20))
    inbox_row("RECEIVED", updated_at=timezone.now() - timedelta(minutes=10))
    inbox_row("RECEIVED")  # just taken in: not stuck
    breakers.force_open(BREAKER, 120)
    breakers.breaker_for("whatsapp:1234567890")  # known and closed: not listed
    now = timezone.now()
    WebhookDelivery.objects.create(body=b"{}", messages=3, new_messages=2, duplicates=1, statuses=2)
    WebhookDelivery.objects.create(body=b"{}", messages=1, new_messages=0, unroutable=0, duplicates=1)
    old = WebhookDelivery.objects.create(body=b"{}", messages=9, new_messages=9)
    WebhookDelivery.objects.filter(pk=old.pk).update(received_at=now - timedelta(hours=2))
    InboundMessage.objects.create(
        wamid="wamid.A1",
        phone_number_id="1234567890",
        wa_id="15551230000",
        type="text",
        text="hello",
        received_at=now,
        stored_at=now - timedelta(seconds=90),
        processing_id="wa-A1",
        lead_id="wa-15551230000",
    )

    client.force_login(viewer)
    data = client.get(DATA).json()
    assert data["stuck"]["count"] == 2 and data["stuck"]["after_seconds"] == 300
    oldest = data["stuck"]["oldest"]
    assert oldest["processing_id"] == stuck.processing_id and oldest["status"] == "PROCESSING"
    assert 19 * 60 < oldest["age_seconds"] < 21 * 60
    assert oldest["url"] == f"/admin/whatsapp/processedmessage/{stuck.pk}/change/"
    assert [(b["name"], b["state"]) for b in data["breakers"]] == [(BREAKER, "open")]
    assert 100 < data["breakers"][0]["remaining_seconds"] <= 120
    assert data["webhooks"] == {
        "deliveries": 2,
        "messages": 4,
        "new_messages": 2,
        "duplicates": 2,
        "unroutable": 0,
        "unreadable": 0,
        "statuses": 2,
    }
    assert data["account_notices"] == []
    assert data["outbox"]["backlog"] == 1 and 85 < data["outbox"]["oldest_age_seconds"] < 200
    # The queues /metrics reads, from the same collector.
    assert set(data["queues"]) >= {"pipeline", "webhooks", "whatsapp"}


def test_replies_not_sent_say_why_opted_out_first(client, viewer, business):
    from leads.models import Lead
    from whatsapp.models import OutboundMessage

    lead = Lead.objects.create(lead_id="ld.ov", business=business, wa_id="15551230000")

    def skipped(n: int, status: str, ago: timedelta = timedelta(0)) -> None:
        row = OutboundMessage.objects.create(
            processing_id=f"ov-{n}",
            saga_run=1,
            idempotency_key=f"ov-{n}:1:reply",
            business=business,
            lead=lead,
            to=lead.wa_id,
            body="hi",
            status=status,
        )
        OutboundMessage.objects.filter(pk=row.pk).update(updated_at=timezone.now() - ago)

    skipped(1, "SKIPPED_OPTED_OUT")
    skipped(2, "SKIPPED_OPTED_OUT")
    skipped(3, "SKIPPED_WINDOW_CLOSED")
    skipped(4, "SKIPPED_OPTED_OUT", ago=timedelta(hours=2))  # past the hour
    skipped(5, "SENT")
    client.force_login(viewer)
    rows = client.get(DATA).json()["replies_not_sent"]
    assert [(r["status"], r["count"]) for r in rows] == [
        ("SKIPPED_OPTED_OUT", 2),
        ("SKIPPED_WINDOW_CLOSED", 1),
        ("SKIPPED_DISABLED", 0),
    ]
    assert rows[0]["why"].startswith("the customer opted out")
    assert rows[0]["url"] == "/admin/whatsapp/outboundmessage/?status__exact=SKIPPED_OPTED_OUT"
    assert b"Replies not sent, last hour" in client.get(PAGE).content


def test_anonymous_is_sent_to_log_in_and_others_are_refused(client, django_user_model, viewer):
    for url in (PAGE, DATA):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/?next=")
    # Logged in but not staff: the admin's login page, no figures.
    client.force_login(django_user_model.objects.create_user("customer", "c@example.com", "pw"))
    for url in (PAGE, DATA):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    # Staff without the permission to view the inbox.
    client.force_login(django_user_model.objects.create_user("intern", "i@example.com", "pw", is_staff=True))
    for url in (PAGE, DATA):
        response = client.get(url)
        assert response.status_code == 403
        assert b"per_minute" not in response.content
    index = client.get("/admin/")
    assert b'id="overview-link"' not in index.content


def test_the_page_is_linked_from_the_index_and_view_site_and_loads_the_vendored_chart(client, viewer):
    client.force_login(viewer)
    index = client.get("/admin/").content.decode()
    assert 'id="overview-link"' in index and 'href="/admin/overview/"' in index
    # The admin's "View site" link.
    assert '<a href="/admin/overview/">View site</a>' in index
    page = client.get(PAGE)
    assert page.status_code == 200
    body = page.content.decode()
    assert "<title>Live overview | WhatsApp message handler</title>" in body
    assert 'data-url="/admin/overview/data.json"' in body
    assert "/static/whatsapp/overview/uplot/uPlot.iife.min.js" in body
    assert "//cdn" not in body and "https://" not in body.split("<body", 1)[1]


def test_a_poll_costs_a_bounded_number_of_queries_however_many_rows(client, viewer, django_assert_max_num_queries):
    client.force_login(viewer)

    def queries() -> int:
        ScrapeTimeCollector.forget()  # the worst case: the scrape-time gauges read again too
        # 17: the replies not sent (opt-out) added one aggregate to the 16 before.
        with django_assert_max_num_queries(17) as captured:
            assert client.get(DATA).status_code == 200
        return len(captured.captured_queries)

    few = queries()
    for i in range(40):
        inbox_row("PROCESSED", finished_ago=60 + i * 60)
        inbox_row("FAILED", finished_ago=90 + i * 30)
        dead_letter(f"reason_{i % 7}", f"stage_{i % 3}", ago=i * 45)
    inbox_row("PROCESSING", updated_at=timezone.now() - timedelta(hours=1))
    assert queries() == few
    # Within the cache window the gauges are not read again.
    with django_assert_max_num_queries(few - 3):
        client.get(DATA)


def test_the_hour_is_read_through_indexes():
    """With sequential scans off, Postgres can find the hour's finished rows and dead letters
    from the two indexes the overview added (no other index covers these times)."""
    now = timezone.now()
    finished = ProcessedMessage.objects.filter(finished_at__gte=now - timedelta(hours=1))
    written = DeadLetter.objects.filter(created_at__gte=now - timedelta(hours=1))
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        assert "inbox_finished" in finished.explain()
        assert "dlq_created" in written.explain()
