"""The sales webhook POST is made with no database transaction open: a real ingest,
a real Celery worker and a real receiver. (The client's own safety, in this
process: tests/unit/core/test_webhook_client.py.)"""

from __future__ import annotations

import json

import psycopg
import pytest
from django.db import connection
from werkzeug import Request, Response

from leads.models import SalesNotification
from tests.support import kafka
from tests.support.events import encode, event
from tests.support.processes import wait_until
from whatsapp.models import ProcessedMessage, SagaStep

# --- The SSRF guard ---------------------------------------------------------------------


# --- Breaker names -----------------------------------------------------------------------


# --- The response cap ----------------------------------------------------------------------


# --- The total deadline -----------------------------------------------------------------------


# --- The timestamped signature ------------------------------------------------------------------


# --- No transaction open during the POST ---------------------------------------------------------


def locks_held(dsn: str) -> dict:
    """From a connection of its own: is any session idle in a transaction that touched the saga or
    the notifications, and can the NOTIFY_SALES step and notification rows be locked at once?"""
    found = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        found["idle_in_transaction"] = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND state LIKE 'idle in transaction%%' "
            "AND (query ILIKE '%%whatsapp_sagastep%%' OR query ILIKE '%%leads_salesnotification%%')"
        ).fetchone()[0]
        for table, where in (("whatsapp_sagastep", "action = 'NOTIFY_SALES'"), ("leads_salesnotification", "true")):
            try:
                with conn.transaction():
                    conn.execute(f"SELECT id FROM {table} WHERE {where} FOR UPDATE NOWAIT").fetchall()
                found[table] = "free"
            except psycopg.errors.LockNotAvailable:
                found[table] = "locked"
    return found


@pytest.mark.django_db(transaction=True)
def test_notify_sales_posts_and_retracts_with_no_transaction_open(
    bootstrap, topic, start_ingest, start_worker, business, httpserver
):
    """NOTIFY_SALES, then a step that fails for good (a test plugin), so both the notification
    and its retraction are POSTed. While each request is in the receiver's hands, another
    connection finds no session of the worker idle in a transaction and the rows unlocked."""
    db = connection.settings_dict
    dsn = f"host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432} dbname={db['NAME']} user={db['USER']}"
    seen = []

    def crm(request: Request) -> Response:
        seen.append((json.loads(request.data)["type"], locks_held(dsn)))
        return Response("{}", status=200, content_type="application/json")

    httpserver.expect_request("/sales", method="POST").respond_with_handler(crm)
    business.sales_webhook_url = httpserver.url_for("/sales")
    business.save()
    start_worker(env={"WHATSAPP_PLUGINS": "tests.support.plugins"})
    start_ingest(topic)
    kafka.produce(
        bootstrap,
        topic,
        [(b"lead-123", encode(event("drill-tx", intent="COMPLAINT", entities={"drill": "compensation"})))],
    )
    wait_until(
        lambda: ProcessedMessage.objects.filter(processing_id="drill-tx", status="FAILED").exists(),
        timeout=120,
        message="the run to fail and be compensated",
    )

    free = {"idle_in_transaction": 0, "whatsapp_sagastep": "free", "leads_salesnotification": "free"}
    assert seen == [("notification", free), ("retraction", free)]
    assert list(
        SagaStep.objects.filter(message__processing_id="drill-tx").order_by("order").values_list("action", "status")
    ) == [("NOTIFY_SALES", "COMPENSATED"), ("ALWAYS_FAIL", "FAILED")]
    assert SalesNotification.objects.get().status == SalesNotification.Status.RETRACTED
