"""DLQ review in a real browser: headless Chromium (Debian's package, driven by
Playwright) against the admin served by pytest-django's live_server, with a real
ingest process, Celery worker and Kafka topic behind it.

Screenshots of the pages it visits are saved to var/test-artifacts/admin-screenshots/; with
SCREENSHOTS=1 an entry's page also goes to docs/dead-letter.png, the README's picture.
Without /usr/bin/chromium (or the playwright package) the test is skipped, and
pytest's -ra summary says why.

Inside the Playwright block the ORM is not used (Playwright's sync API runs an
event loop in this thread, and Django refuses database calls from one): what
is checked there is checked as a person would, on the pages.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from werkzeug import Response

from dlq.models import DeadLetter
from tests.support import kafka as kafka_support
from tests.support.browser import CHROMIUM, needs_browser
from tests.support.events import event
from tests.support.processes import ARTIFACTS, ROOT, wait_until
from whatsapp.models import ProcessedMessage

SCREENSHOTS = ARTIFACTS / "admin-screenshots"
DOCS = ROOT / "docs"


pytestmark = [
    pytest.mark.django_db(transaction=True),
    needs_browser,
]

PASSWORD = "correct horse battery staple"


def staff(django_user_model, username: str, codenames: list[str]):
    user = django_user_model.objects.create_user(username, f"{username}@example.com", PASSWORD, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def log_in(browser, base: str, username: str, viewport: dict | None = None, **options):
    context = browser.new_context(viewport=viewport or {"width": 1600, "height": 900}, **options)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")
    return context, page


def open_entry_by_reason(page, base: str, reason: str) -> None:
    """As a person would: the DLQ list, the reason filter in the sidebar, the one entry."""
    page.goto(f"{base}/admin/dlq/deadletter/")
    page.locator("#changelist-filter").get_by_role("link", name=reason, exact=True).click()
    page.wait_for_url(f"**reason={reason}**")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1, rows.all_inner_texts()
    assert reason in rows.first.inner_text()


def test_dlq_review_requeue_and_permissions_in_a_browser(
    live_server, pipeline, business, httpserver, django_user_model, bootstrap
):
    from playwright.sync_api import expect, sync_playwright

    notified = []

    def crm(request):
        notified.append(json.loads(request.data))
        if len([n for n in notified if n.get("type") != "retraction"]) == 1:
            return Response('{"error": "unknown lead"}', status=422, content_type="application/json")
        return Response('{"ok": true}', status=200, content_type="application/json")

    httpserver.expect_request("/sales", method="POST").respond_with_handler(crm)
    business.sales_webhook_url = httpserver.url_for("/sales")
    business.save()
    # Two dead letters of different reasons: a saga that failed at NOTIFY_SALES, and a record that is not JSON.
    pipeline.send([event("complaint-1", intent="COMPLAINT", entities={"severity": "high"})])
    kafka_support.produce(bootstrap, pipeline.topic, [(b"lead-x", b"this is not json {")])
    pipeline.wait_settled(1)
    wait_until(lambda: DeadLetter.objects.count() == 2, timeout=30, message="two dead letters")
    failed = DeadLetter.objects.get(reason="non_retryable")
    reader = ["view_deadletter", "change_deadletter", "view_processedmessage"]
    staff(django_user_model, "agent", reader)
    staff(django_user_model, "ops", [*reader, "requeue_deadletter"])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    base = live_server.url

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            # A support agent reads everything but has no way to requeue, and a forged POST is refused.
            context, page = log_in(browser, base, "agent")
            open_entry_by_reason(page, base, "non_retryable")
            actions = page.locator("select[name=action] option").all_inner_texts()
            assert any("Resolve" in a for a in actions) and not any("Requeue" in a for a in actions), actions
            page.locator("#result_list tbody tr th a").first.click()
            # What the customer wrote is withheld from whoever may not export it.
            expect(page.locator(".field-record_withheld")).to_contain_text("Withheld")
            expect(page.locator(".field-payload_json")).to_have_count(0)
            expect(page.locator(".field-raw_record")).to_have_count(0)
            expect(page.locator(".field-traceback_text pre")).to_contain_text("Traceback (most recent call last)")
            expect(page.locator("#resolve-button")).to_be_visible()
            expect(page.locator("#requeue-button")).to_have_count(0)
            page.screenshot(path=SCREENSHOTS / "dlq-detail-without-requeue-permission.png", full_page=True)
            token = next(c["value"] for c in context.cookies() if c["name"] == "csrftoken")
            forged = context.request.post(
                f"{base}/admin/dlq/deadletter/",
                form={
                    "csrfmiddlewaretoken": token,
                    "action": "requeue_selected",
                    "index": "0",
                    "_selected_action": str(failed.pk),
                },
                headers={"Referer": page.url},
            )
            assert forged.status == 403
            page.reload()
            expect(page.locator(".field-status")).to_contain_text("Open")
            expect(page.locator(".field-requeue_log")).to_contain_text("never requeued")
            context.close()

            # On a 1280x800 screen the list reads without scrolling sideways, and a selection exports.
            context, page = log_in(browser, base, "ops", {"width": 1280, "height": 800}, accept_downloads=True)
            page.goto(f"{base}/admin/dlq/deadletter/")
            rows = page.locator("#result_list tbody tr")
            expect(rows).to_have_count(2)
            # The table sits in a box that scrolls sideways when it is too wide: each cell must
            # lie within that box (and the screen), and the box must have nothing to scroll to.
            results = page.locator("#changelist .results")
            frame = results.bounding_box()
            assert frame is not None and frame["x"] + frame["width"] <= 1280, frame
            assert results.evaluate("e => e.scrollWidth <= e.clientWidth"), "the dead letters scroll sideways"
            for column in ("age", "stage", "reason", "business", "short_error", "requeues"):
                box = rows.first.locator(f"td.field-{column}").bounding_box()
                assert box is not None and frame["x"] <= box["x"], (column, box)
                assert box["x"] + box["width"] <= frame["x"] + frame["width"], (column, box, frame)
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280, "the page scrolls sideways"
            expect(rows.first.locator("td.field-short_error")).not_to_be_empty()
            page.screenshot(path=SCREENSHOTS / "dlq-list-1280.png")
            rows.first.locator("input.action-select").check()
            rows.nth(1).locator("input.action-select").check()
            page.select_option("select[name=action]", "export_jsonl")
            with page.expect_download() as download:
                page.click("button[name=index]")
            exported = [json.loads(line) for line in Path(download.value.path()).read_text().splitlines()]
            assert {row["reason"] for row in exported} == {"non_retryable", "invalid_payload"}
            assert {row["raw_value"] for row in exported if row["reason"] == "invalid_payload"} == {
                "this is not json {"
            }
            context.close()

            # Operations: filter, open, read, requeue, and watch the message go through.
            context, page = log_in(browser, base, "ops")
            open_entry_by_reason(page, base, "non_retryable")
            page.screenshot(path=SCREENSHOTS / "dlq-list-filtered-by-reason.png", full_page=True)
            page.locator("#result_list tbody tr th a").first.click()
            expect(page.locator(".field-status")).to_contain_text("Open")
            expect(page.locator(".field-payload_json pre")).to_contain_text('"processing_id": "complaint-1"')
            expect(page.locator(".field-traceback_text pre")).to_contain_text("Traceback (most recent call last)")
            expect(page.locator(".field-traceback_text pre")).to_contain_text("422")
            expect(page.locator(".field-saga_steps")).to_contain_text("NOTIFY_SALES")
            expect(page.locator(".field-saga_steps")).to_contain_text("COMPENSATED")
            expect(page.locator(".field-kafka_coordinates")).to_contain_text(pipeline.topic)
            page.screenshot(path=SCREENSHOTS / "dlq-detail.png", full_page=True)
            if os.environ.get("SCREENSHOTS"):  # the README's picture (docs/); a normal run leaves the tree alone
                page.screenshot(path=DOCS / "dead-letter.png", full_page=True)

            page.click("#requeue-button")
            expect(page.locator(".messagelist")).to_contain_text("Requeued 1 dead letter")
            expect(page.locator(".field-status")).to_contain_text("Requeued")
            expect(page.locator(".field-requeue_log")).to_contain_text("ops")
            expect(page.locator("#requeue-button")).to_have_count(0)

            page.locator(".field-inbox_message a").click()
            deadline = time.monotonic() + 60
            while "PROCESSED" not in page.locator(".field-status").inner_text().upper():
                assert time.monotonic() < deadline, (
                    f"inbox row not PROCESSED: {page.locator('.field-status').inner_text()}"
                )
                time.sleep(1)
                page.reload()
            expect(page.locator(".field-saga_run")).to_contain_text("2")
            page.screenshot(path=SCREENSHOTS / "inbox-after-requeue.png", full_page=True)
            context.close()
        finally:
            browser.close()

    failed.refresh_from_db()
    assert failed.status == "REQUEUED" and failed.requeue_history[0]["by"] == "ops"
    assert ProcessedMessage.objects.get(processing_id="complaint-1").status == "PROCESSED"
    from django.contrib.admin.models import LogEntry

    assert [(e.user.username, e.object_id, e.change_message) for e in LogEntry.objects.all()] == [
        ("ops", str(failed.pk), "Requeued (saga run 2).")
    ]
    for name in (
        "dlq-list-1280.png",
        "dlq-list-filtered-by-reason.png",
        "dlq-detail.png",
        "dlq-detail-without-requeue-permission.png",
    ):
        assert (SCREENSHOTS / name).stat().st_size > 10_000
