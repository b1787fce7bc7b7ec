"""/readyz and /metrics with their dependencies really there: the Redis that goes
down is a throwaway redis-server started for the test (so the machine's Redis
keeps serving the other tests), and a real topic is read once per cache window."""

from __future__ import annotations

import pytest
import redis
import sentry_sdk
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext

from core.metrics.serving import exposition
from devtools.services import start_redis
from tests.support.observability import Scrape
from whatsapp.ops.collectors import ScrapeTimeCollector


@pytest.fixture(autouse=True)
def fresh_scrape():
    """Each test reads the scrape-time gauges itself, never what an earlier test left in the cache."""
    ScrapeTimeCollector.forget()
    yield
    ScrapeTimeCollector.forget()


@pytest.fixture
def staff(django_user_model):
    """Operations staff with the permission to read /metrics."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("ops", "ops@example.com", "pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_metrics", content_type__app_label="whatsapp"))
    return user


@pytest.fixture
def own_redis(tmp_path):
    server = start_redis(tmp_path / "redis")
    yield server
    server.stop()


@pytest.mark.django_db
def test_readyz_names_the_dependency_that_is_down(client: Client, own_redis):
    # Redis on the throwaway server, the broker on the usual one: only Redis can fail.
    with override_settings(REDIS_URL=own_redis.url, READYZ_TIMEOUT_SECONDS=1.0):
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.json()
        assert ready.json()["status"] == "ok" and ready.json()["failed"] == []
        assert {name: check["ok"] for name, check in ready.json()["checks"].items()} == {
            "database": True,
            "redis": True,
            "broker": True,
        }

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
def test_metrics_endpoint_reads_queue_lengths_at_scrape_time(client: Client, own_redis, staff):
    """celery_queue_length adds up the lists kombu keeps per priority of a queue."""
    broker = redis.Redis.from_url(own_redis.url)
    broker.rpush("pipeline", *[b"task"] * 3)
    broker.rpush("pipeline\x06\x163", *[b"task"] * 2)
    broker.rpush("webhooks\x06\x169", b"task")
    broker.rpush("unrelated", b"task")
    client.force_login(staff)
    with override_settings(CELERY_BROKER_URL=own_redis.url):
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    scrape = Scrape(response.content.decode())
    assert scrape.by("celery_queue_length", "queue") == {"pipeline": 5, "webhooks": 1}
    assert {labels["queue"] for labels, _ in scrape.samples["celery_queue_length"]} == {
        "pipeline",
        "webhooks",
        "whatsapp",
    }
    assert scrape.value("inbox_stuck_messages") == 0
    assert "# TYPE whatsapp_messages_received_total counter" in scrape.text


def _counting(monkeypatch, name: str) -> list[int]:
    """Count the calls of one of ScrapeTimeCollector's readers; each still does its real work."""
    calls: list[int] = []
    read = getattr(ScrapeTimeCollector, name)

    def counted():
        calls.append(1)
        return read()

    monkeypatch.setattr(ScrapeTimeCollector, name, staticmethod(counted))
    return calls


def _inbox_and_dlq_queries(captured: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"]
        for q in captured.captured_queries
        if "whatsapp_processedmessage" in q["sql"] or "dlq_deadletter" in q["sql"]
    ]


@pytest.mark.django_db
def test_scrapes_within_the_cache_window_read_the_database_and_kafka_once(monkeypatch, topic):
    consumers = _counting(monkeypatch, "consumer_lag")
    with override_settings(METRICS_CACHE_SECONDS=300, KAFKA_RESULT_TOPIC=topic):
        with CaptureQueriesContext(connection) as captured:
            first, _ = exposition()
            second, _ = exposition()
        assert len(_inbox_and_dlq_queries(captured)) == 2, "one count of stuck rows, one of open dead letters"
        assert len(consumers) == 1, "one Kafka consumer for both scrapes"
        for body in (first, second):
            assert b"# TYPE inbox_stuck_messages gauge" in body and b"# TYPE dlq_open_entries gauge" in body
            assert f'kafka_consumer_lag{{partition="0",topic="{topic}"}} 0.0'.encode() in body

    ScrapeTimeCollector.forget()
    with override_settings(METRICS_CACHE_SECONDS=0, KAFKA_RESULT_TOPIC=topic):
        with CaptureQueriesContext(connection) as captured:
            exposition()
            exposition()
        assert len(_inbox_and_dlq_queries(captured)) == 4, "no cache: every scrape reads"
        assert len(consumers) == 3
