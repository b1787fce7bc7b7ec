"""The admin's live overview in a real browser (Debian's chromium through Playwright, as in
test_admin_browser.py) against pytest-django's live_server: an operator logs in, opens the
overview from the admin index, and sees it redraw by itself, without a reload, within 5 s of
new messages finishing and a new dead letter being written.

The new rows are written as the pipeline writes them (an inbox row finished PROCESSED, a dead
letter), from a thread of their own: Playwright's sync API runs an event loop in the test's
thread, where Django refuses database calls.

With SCREENSHOTS=1 the page is also saved as docs/overview.png (the README's picture); a
normal run writes only under var/test-artifacts/.
"""

from __future__ import annotations

import os
import re
import threading
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.utils import timezone

from core import breakers
from dlq.models import DeadLetter
from tests.support import kafka as kafka_support
from tests.support.browser import CHROMIUM, needs_browser
from tests.support.events import event
from tests.support.processes import ARTIFACTS, ROOT
from whatsapp.models import ProcessedMessage, WebhookDelivery

SCREENSHOTS = ARTIFACTS / "admin-screenshots"
DOCS = ROOT / "docs"
PASSWORD = "correct horse battery staple"
BREAKER = "webhook:https://crm.example.com:443"


pytestmark = [
    pytest.mark.django_db(transaction=True),
    needs_browser,
]

_seq = iter(range(1_000_000))


def finished(status: str, seconds_ago: float, took: float = 0.4, business: str = "acme") -> None:
    """An inbox row as ingest stored it and the pipeline finished it `seconds_ago`."""
    n = next(_seq)
    row = ProcessedMessage.objects.create(
        processing_id=f"proc-{n:05d}", business_id=business, lead_id=f"lead-{n}", intent="ORDER_REQUEST", payload={}
    )
    done = timezone.now() - timedelta(seconds=seconds_ago)
    ProcessedMessage.objects.filter(pk=row.pk).update(
        status=status,
        kafka_timestamp=done - timedelta(seconds=took + 0.05),
        received_at=done - timedelta(seconds=took),
        finished_at=done,
    )


def dead_letter(reason: str, stage: str, seconds_ago: float = 0) -> None:
    entry = DeadLetter.objects.create(reason=reason, stage=stage, business_id="acme", error_message="refused")
    DeadLetter.objects.filter(pk=entry.pk).update(created_at=timezone.now() - timedelta(seconds=seconds_ago))


def an_hour_of_traffic() -> None:
    """Something to look at: a busy hour with a bad patch, a few dead letters, a stuck row.
    Nothing within two minutes of the hour's far end: the page counts the last 60 minutes,
    and a row that ages out while the test runs would change the figures it checks."""
    for minute in range(1, 58):
        rate = 6 + (minute * 7) % 11 + (12 if 20 <= minute <= 26 else 0)
        for i in range(rate):
            finished("PROCESSED", minute * 60 + i * 3, took=0.2 + (i % 5) * 0.15)
        if 20 <= minute <= 26:
            finished("FAILED", minute * 60 + 5)
            dead_letter("retries_exhausted", "NOTIFY_SALES", minute * 60 + 5)
    for seconds_ago in (300, 900, 1500):
        dead_letter("invalid_payload", "ingest", seconds_ago)
    dead_letter("unknown_business", "ingest", 2400)
    stuck = ProcessedMessage.objects.create(
        processing_id="proc-stuck-1", business_id="acme", lead_id="lead-s", intent="COMPLAINT", payload={}
    )
    ProcessedMessage.objects.filter(pk=stuck.pk).update(
        status="PROCESSING", updated_at=timezone.now() - timedelta(minutes=12)
    )
    WebhookDelivery.objects.create(body=b"{}", messages=40, new_messages=38, duplicates=2, statuses=75)


def in_a_thread(work) -> float:
    """Run database work off Playwright's event-loop thread; the time it committed."""
    done: list[float] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
            done.append(time.monotonic())
        except BaseException as exc:
            failed.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    if failed:
        raise failed[0]
    return done[0]


def test_the_overview_redraws_itself_within_5_s_of_new_messages(
    live_server, django_user_model, settings, bootstrap, topic
):
    from playwright.sync_api import expect, sync_playwright

    # Four records nobody has consumed yet: the consumer lag /metrics reports, on the page.
    settings.KAFKA_RESULT_TOPIC = topic
    kafka_support.produce(bootstrap, topic, [(f"lead-{i}".encode(), b"{}") for i in range(4)])
    an_hour_of_traffic()
    breakers.force_open(BREAKER, 90)
    user = django_user_model.objects.create_user("ops", "ops@example.com", PASSWORD, is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["view_processedmessage", "view_deadletter", "view_circuitbreaker"])
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    base = live_server.url

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.goto(f"{base}/admin/login/")
            page.fill("#id_username", "ops")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url(f"{base}/admin/")
            page.screenshot(path=SCREENSHOTS / "admin-index.png")
            page.locator("#overview-link a").click()
            page.wait_for_url(f"{base}/admin/overview/")
            expect(page.locator("#ov-updated")).not_to_have_text("not yet")
            processed = int(page.locator("#ov-processed").inner_text())
            assert processed > 300, processed
            expect(page.locator("#ov-dead-letters tbody")).to_contain_text("retries_exhausted")
            expect(page.locator("#ov-breakers tbody")).to_contain_text(BREAKER)
            expect(page.locator("#ov-stuck")).to_contain_text("proc-stuck-1")
            expect(page.locator("#ov-stuck-count")).to_have_text("1")
            expect(page.locator("#ov-latency-end-to-end td").first).not_to_have_text(
                "\u2013"
            )  # the dash shown before the first read
            expect(page.locator("#ov-queues tbody")).to_contain_text(
                re.compile(r"consumer lag, all partitions\s*[1-4]")
            )
            assert page.evaluate("document.getElementById('overview').chart.data[0].length") == 60
            page.evaluate("window.notReloaded = true")
            page.screenshot(path=SCREENSHOTS / "overview.png", full_page=True)
            if os.environ.get("SCREENSHOTS"):
                DOCS.mkdir(exist_ok=True)
                page.screenshot(path=DOCS / "overview.png", full_page=True)

            # New messages finish and a new kind of dead letter is written: the page shows them by itself.
            def traffic() -> None:
                for _ in range(7):
                    finished("PROCESSED", 0)
                dead_letter("tenant_mismatch", "ingest")

            committed = in_a_thread(traffic)
            expect(page.locator("#ov-processed")).to_have_text(str(processed + 7), timeout=5_000)
            expect(page.locator("#ov-dead-letters tbody")).to_contain_text("tenant_mismatch", timeout=5_000)
            waited = time.monotonic() - committed
            assert waited < 5, f"the overview showed the new messages {waited:.1f} s after they were written"
            assert page.evaluate("window.notReloaded === true"), "the page was reloaded"
            # The chart's current minute holds the new messages (or the minute just before, if it turned over).
            drawn = page.evaluate("document.getElementById('overview').chart.data[1].slice(-2)")
            assert sum(drawn) >= 7, drawn

            # Its link opens the DLQ list filtered to that reason and stage.
            page.locator("#ov-dead-letters tbody a", has_text="tenant_mismatch").click()
            page.wait_for_url("**reason__exact=tenant_mismatch**")
            expect(page.locator("#result_list tbody tr")).to_have_count(1)
            expect(page.locator("#result_list tbody tr")).to_contain_text("tenant_mismatch")
            context.close()
        finally:
            browser.close()


def test_the_overview_shows_messages_pushed_through_the_pipeline(live_server, pipeline, django_user_model):
    """The same through the real path: records on Kafka, ingest, a Celery worker. The page must
    show the last message within 5 s of the worker finishing it (both clocks are this machine's)."""
    from playwright.sync_api import expect, sync_playwright

    user = django_user_model.objects.create_user("ops", "ops@example.com", PASSWORD, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="view_processedmessage"))
    base = live_server.url

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(20_000)
            page.goto(f"{base}/admin/login/?next=/admin/overview/")
            page.fill("#id_username", "ops")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url(f"{base}/admin/overview/")
            expect(page.locator("#ov-updated")).not_to_have_text("not yet")
            expect(page.locator("#ov-processed")).to_have_text("0")
            page.evaluate("window.notReloaded = true")

            pipeline.send([event(f"avail-{i}", intent="AVAILABILITY_INQUIRY", lead_id=f"lead-{i}") for i in range(5)])
            expect(page.locator("#ov-processed")).to_have_text("5", timeout=90_000)
            shown = timezone.now()
            expect(page.locator("#ov-in-flight")).to_have_text("0")
            expect(page.locator("#ov-latency-count")).to_contain_text("5 messages processed")
            assert page.evaluate("window.notReloaded === true"), "the page was reloaded"
        finally:
            browser.close()

    last = ProcessedMessage.objects.filter(status="PROCESSED").latest("finished_at").finished_at
    assert ProcessedMessage.objects.filter(status="PROCESSED").count() == 5
    assert (shown - last).total_seconds() < 5, f"shown {(shown - last).total_seconds():.1f} s after the last finished"
