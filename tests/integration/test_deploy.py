"""The web process as deployed behind a TLS proxy (SECURE_HTTPS=true), over real HTTP.

A runserver child process with the production settings; the requests carry what
the proxy adds (X-Forwarded-Proto: https) or, like a probe, nothing."""

from __future__ import annotations

import re
import sys

import pytest
import requests

from devtools.services import free_port
from tests.support.processes import ManagedProcess, wait_until

ORIGIN = "https://admin.example.com"
PROXIED = {"X-Forwarded-Proto": "https"}


@pytest.fixture
def secure_web(child_env, processes) -> str:
    port = free_port()
    env = {
        **child_env,
        "SECURE_HTTPS": "true",
        "ALLOWED_HOSTS": "127.0.0.1",
        "CSRF_TRUSTED_ORIGINS": ORIGIN,
        "SECRET_KEY": "k" * 20 + "-deploy-test-secret-key-0123456789",
    }
    web = ManagedProcess(
        "web-secure", [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"], env
    )
    processes.append(web)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{base}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(up, timeout=30, message="the web process")
    return base


def test_plain_http_is_redirected_but_probes_are_not(secure_web):
    admin = requests.get(f"{secure_web}/admin/login/", allow_redirects=False, timeout=10)
    assert admin.status_code == 301 and admin.headers["Location"].startswith("https://127.0.0.1:")
    assert requests.get(f"{secure_web}/healthz", allow_redirects=False, timeout=10).status_code == 200
    ready = requests.get(f"{secure_web}/readyz", allow_redirects=False, timeout=10)
    assert ready.status_code in (200, 503) and "status" in ready.json()
    metrics = requests.get(f"{secure_web}/metrics", allow_redirects=False, timeout=10)
    assert metrics.status_code == 401, "not redirected, and still refused without a token"


def test_behind_the_proxy_cookies_are_secure_hsts_is_sent_and_trusted_origins_may_post(secure_web, django_user_model):
    """The test talks plain http to the process, as the proxy does; a client library
    would rightly keep Secure cookies from plain http, so they are passed on by hand."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("ops", "ops@example.com", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_metrics", content_type__app_label="whatsapp"))
    # Hashed as the production settings hash (the test settings use a faster hasher the child does not know).
    user.password = PBKDF2PasswordHasher().encode("plum-Harbor-quietly-7", PBKDF2PasswordHasher().salt())
    user.save(update_fields=["password"])
    page = requests.get(f"{secure_web}/admin/login/", headers=PROXIED, timeout=10)
    assert page.status_code == 200
    assert page.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert page.headers["X-Frame-Options"] == "DENY"
    csrf_cookie = next(c for c in page.cookies if c.name == "csrftoken")
    assert csrf_cookie.secure, "the CSRF cookie travels only over HTTPS"
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    form = {"csrfmiddlewaretoken": token, "username": "ops", "password": "plum-Harbor-quietly-7", "next": "/admin/"}
    cookie = {"Cookie": f"csrftoken={csrf_cookie.value}"}

    forged = requests.post(
        f"{secure_web}/admin/login/",
        data=form,
        allow_redirects=False,
        timeout=10,
        headers={**PROXIED, **cookie, "Origin": "https://evil.example.com"},
    )
    assert forged.status_code == 403

    login = requests.post(
        f"{secure_web}/admin/login/",
        data=form,
        allow_redirects=False,
        timeout=10,
        headers={**PROXIED, **cookie, "Origin": ORIGIN},
    )
    assert login.status_code == 302, login.text[:2000]
    session_cookie = next(c for c in login.cookies if c.name == "sessionid")
    assert session_cookie.secure and session_cookie.has_nonstandard_attr("HttpOnly")
    # Logged in as staff with the permission to, the browser may read /metrics.
    metrics = requests.get(
        f"{secure_web}/metrics", timeout=30, headers={**PROXIED, "Cookie": f"sessionid={session_cookie.value}"}
    )
    assert metrics.status_code == 200 and b"# TYPE celery_queue_length gauge" in metrics.content
