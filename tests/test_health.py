"""/healthz, /readyz and /metrics as a load balancer or Prometheus sees them.

Redis is "stopped" by cutting a TCP proxy in front of it: the machine's Redis keeps
serving the other tests."""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest
import sentry_sdk
from django.conf import settings
from django.test import Client, override_settings

from tests.support.proxy import FaultProxy


def test_healthz_says_the_process_is_up(client: Client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_names_the_dependency_that_is_down(client: Client):
    parts = urlsplit(settings.REDIS_URL)
    proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    behind_proxy = urlunsplit(parts._replace(netloc=f"127.0.0.1:{proxy.port}"))
    try:
        # Redis behind the proxy, the broker straight to the server: only Redis can fail.
        with override_settings(REDIS_URL=behind_proxy, READYZ_TIMEOUT_SECONDS=1.0):
            ready = client.get("/readyz")
            assert ready.status_code == 200, ready.json()
            assert ready.json()["status"] == "ok"
            assert {name: check["ok"] for name, check in ready.json()["checks"].items()} == \
                {"database": True, "redis": True, "broker": True}

            proxy.cut()
            down = client.get("/readyz")
            assert down.status_code == 503
            body = down.json()
            assert body["status"] == "unavailable" and body["failed"] == ["redis"]
            assert body["checks"]["redis"]["ok"] is False and body["checks"]["redis"]["error"]
            assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]

            # The broker on the same (dead) Redis fails too, and is named as well.
            with override_settings(CELERY_BROKER_URL=behind_proxy):
                both = client.get("/readyz")
            assert both.status_code == 503 and both.json()["failed"] == ["redis", "broker"]

            proxy.restore()
            assert client.get("/readyz").status_code == 200
        # A failed Redis call leaves no span behind to lend its trace id to later log lines.
        assert sentry_sdk.get_current_span() is None
    finally:
        proxy.close()


@pytest.mark.django_db
def test_readyz_never_shows_a_password(client: Client):
    with override_settings(REDIS_URL="redis://:hunter2-secret@127.0.0.1:1/0", READYZ_TIMEOUT_SECONDS=0.5):
        response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["failed"] == ["redis"]
    assert b"hunter2" not in response.content


@pytest.mark.django_db
def test_metrics_endpoint_speaks_prometheus(client: Client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    body = response.content.decode()
    assert "# TYPE inbox_stuck_messages gauge" in body
    assert "# TYPE whatsapp_messages_received_total counter" in body
