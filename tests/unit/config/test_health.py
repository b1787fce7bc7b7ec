"""/healthz, /readyz and /metrics as a load balancer or Prometheus sees them,
through Django's test client."""

from __future__ import annotations

import threading

import pytest
from django.db import connections
from django.test import Client, override_settings

from core.metrics.serving import exposition
from whatsapp.ops.collectors import ScrapeTimeCollector

TOKEN = "metrics-scrape-token-0123456789"


@pytest.fixture(autouse=True)
def fresh_scrape():
    """Each test reads the scrape-time gauges itself, never what an earlier test left in the cache."""
    ScrapeTimeCollector.forget()
    yield
    ScrapeTimeCollector.forget()


@pytest.fixture
def staff(django_user_model):
    """Operations staff: may read /metrics (whatsapp.view_metrics)."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("ops", "ops@example.com", "pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_metrics", content_type__app_label="whatsapp"))
    return user


def test_healthz_says_the_process_is_up(client: Client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_never_shows_a_password(client: Client):
    with override_settings(REDIS_URL="redis://:hunter2-secret@127.0.0.1:1/0", READYZ_TIMEOUT_SECONDS=0.5):
        response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["failed"] == ["redis"]
    assert b"hunter2" not in response.content


@pytest.mark.django_db
def test_metrics_need_the_token_or_a_staff_login_with_the_permission(client: Client, django_user_model, staff):
    def scrape(**headers):
        response = client.get("/metrics", headers=headers)
        assert response["Cache-Control"].startswith("max-age=0"), "never cached by a proxy"
        return response

    def refused(response, status):
        assert response.status_code == status, response.content
        assert b"celery_queue_length" not in response.content and b"# TYPE" not in response.content

    with override_settings(METRICS_TOKEN=TOKEN):
        anonymous = scrape()
        refused(anonymous, 401)
        assert anonymous["WWW-Authenticate"] == 'Bearer realm="metrics"'
        refused(scrape(Authorization=f"Bearer {TOKEN}x"), 401)
        refused(scrape(Authorization=f"Bearer {TOKEN[:-1]}"), 401)
        refused(scrape(Authorization=f"Basic {TOKEN}"), 401)
        allowed = scrape(Authorization=f"Bearer {TOKEN}")
        assert allowed.status_code == 200 and b"# TYPE celery_queue_length gauge" in allowed.content

        client.force_login(django_user_model.objects.create_user("customer", "c@example.com", "pw"))
        refused(scrape(), 403)
        # Staff status alone is not enough: a support agent who reads dead letters sees no volumes.
        client.force_login(django_user_model.objects.create_user("agent", "a@example.com", "pw", is_staff=True))
        agent = scrape()
        refused(agent, 403)
        assert b"whatsapp.view_metrics" in agent.content, "the refusal names the permission to ask for"
        client.force_login(django_user_model.objects.create_superuser("root", "r@example.com", "pw"))
        assert scrape().status_code == 200, "a superuser holds every permission"
        client.force_login(staff)
        assert scrape().status_code == 200
        refused(scrape(Authorization="Bearer wrong-token-wrong-token"), 401)
        client.logout()
    with override_settings(METRICS_TOKEN=None):
        refused(scrape(Authorization="Bearer "), 401)
        refused(scrape(Authorization="Bearer None"), 401)
        client.force_login(staff)
        assert scrape().status_code == 200


def _counting(monkeypatch, name: str) -> list[int]:
    """Count the calls of one of ScrapeTimeCollector's readers; each still does its real work."""
    calls: list[int] = []
    read = getattr(ScrapeTimeCollector, name)

    def counted():
        calls.append(1)
        return read()

    monkeypatch.setattr(ScrapeTimeCollector, name, staticmethod(counted))
    return calls


@pytest.mark.django_db(transaction=True)
def test_concurrent_scrapes_share_one_read(monkeypatch):
    """Scrapes arriving together (gunicorn threads, several Prometheus servers): one reads, the others wait for it."""
    reads = _counting(monkeypatch, "stuck_messages")
    start = threading.Barrier(4)
    bodies: list[bytes] = []

    def scrape() -> None:
        try:
            start.wait()
            bodies.append(exposition()[0])
        finally:
            connections.close_all()

    with override_settings(METRICS_CACHE_SECONDS=300):
        threads = [threading.Thread(target=scrape) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert len(bodies) == 4 and all(b"inbox_stuck_messages 0.0" in body for body in bodies)
    assert len(reads) == 1
