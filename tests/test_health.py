"""/healthz, /readyz and /metrics as a load balancer or Prometheus sees them.

The Redis that goes down is a throwaway redis-server started for the test, so the
machine's Redis keeps serving the other tests."""
from __future__ import annotations

import pytest
import redis
import sentry_sdk
from django.conf import settings
from django.test import Client, override_settings

from config.localservices import start_redis
from tests.support.observability import Scrape


@pytest.fixture
def own_redis(tmp_path):
    server = start_redis(tmp_path / "redis")
    yield server
    server.stop()


def test_healthz_says_the_process_is_up(client: Client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_names_the_dependency_that_is_down(client: Client, own_redis):
    # Redis on the throwaway server, the broker on the usual one: only Redis can fail.
    with override_settings(REDIS_URL=own_redis.url, READYZ_TIMEOUT_SECONDS=1.0):
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.json()
        assert ready.json()["status"] == "ok" and ready.json()["failed"] == []
        assert {name: check["ok"] for name, check in ready.json()["checks"].items()} == \
            {"database": True, "redis": True, "broker": True}

        own_redis.stop()
        down = client.get("/readyz")
        assert down.status_code == 503
        body = down.json()
        assert body["status"] == "unavailable" and body["failed"] == ["redis"]
        assert body["checks"]["redis"] == {"ok": False, "error": "ConnectionError", "ms": body["checks"]["redis"]["ms"]}
        assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]

        # A broker on that stopped Redis is named too.
        with override_settings(CELERY_BROKER_URL=own_redis.url):
            both = client.get("/readyz")
        assert both.status_code == 503 and both.json()["failed"] == ["redis", "broker"]
    # A failed Redis call leaves no span behind to lend its trace id to later log lines.
    assert sentry_sdk.get_current_span() is None


@pytest.mark.django_db
def test_readyz_never_shows_a_password(client: Client):
    with override_settings(REDIS_URL="redis://:hunter2-secret@127.0.0.1:1/0", READYZ_TIMEOUT_SECONDS=0.5):
        response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["failed"] == ["redis"]
    assert b"hunter2" not in response.content


@pytest.mark.django_db
def test_metrics_endpoint_reads_queue_lengths_at_scrape_time(client: Client, own_redis):
    """celery_queue_length adds up the lists kombu keeps per priority of a queue."""
    broker = redis.Redis.from_url(own_redis.url)
    broker.rpush("pipeline", *[b"task"] * 3)
    broker.rpush("pipeline\x06\x163", *[b"task"] * 2)
    broker.rpush("webhooks\x06\x169", b"task")
    broker.rpush("unrelated", b"task")
    with override_settings(CELERY_BROKER_URL=own_redis.url):
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    scrape = Scrape(response.content.decode())
    assert scrape.by("celery_queue_length", "queue") == {"pipeline": 5, "webhooks": 1}
    assert {labels["queue"] for labels, _ in scrape.samples["celery_queue_length"]} == {"pipeline", "webhooks", "whatsapp"}
    assert scrape.value("inbox_stuck_messages") == 0
    assert "# TYPE whatsapp_messages_received_total counter" in scrape.text
