"""A missing or malformed setting stops the process with one line naming it; the
production settings pass Django's deployment checks."""

import json
import os
import secrets
import string
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"SECRET_KEY": "a-perfectly-long-secret-key-for-this-test-0123456789", "DEBUG": "0"}


# Settings this file's tests set themselves; any in the outer environment would skew them.
OURS = {
    "SECRET_KEY",
    "DEBUG",
    "ALLOWED_HOSTS",
    "SECURE_HTTPS",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_PRELOAD",
    "CSRF_TRUSTED_ORIGINS",
    "METRICS_TOKEN",
    "INGEST_METRICS_ADDR",
    "METRICS_CACHE_SECONDS",
}


def run(argv: list[str], **env_overrides: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in OURS}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    env.update(GOOD)
    for key, value in env_overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def run_check(**env_overrides: str | None) -> subprocess.CompletedProcess:
    return run(["manage.py", "check"], **env_overrides)


def settings_under(*names: str, **env_overrides: str | None) -> dict:
    """What config/settings.py makes of the given environment."""
    code = (
        "import json, django; django.setup(); from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n) for n in {list(names)!r}}}))"
    )
    result = run(["-c", code], **env_overrides)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def random_secret_key() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits + "!@#%^&*(-_=+)") for _ in range(50))


def check_deploy(**env_overrides: str | None) -> subprocess.CompletedProcess:
    return run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        SECRET_KEY=random_secret_key(),
        ALLOWED_HOSTS="example.com",
        **env_overrides,
    )


def test_good_settings_pass():
    result = run_check()
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "name, value, fragment",
    [
        ("SECRET_KEY", None, "SECRET_KEY: is required"),
        ("SECRET_KEY", "short", "SECRET_KEY: must be at least 50"),
        ("SECRET_KEY", "django-insecure-" + "x" * 50, "SECRET_KEY: starts with 'django-insecure-'"),
        ("WHATSAPP_GRAPH_BASE_URL", "http://graph.example.com", "WHATSAPP_GRAPH_BASE_URL: must be https://"),
        ("WHATSAPP_GRAPH_VERSION", "v21.0/../x", "WHATSAPP_GRAPH_VERSION: must look like v21.0"),
        ("TASK_TIME_LIMIT_SECONDS", "4000", "TASK_TIME_LIMIT_SECONDS: must be below CELERY_VISIBILITY_TIMEOUT"),
        ("DATABASE_URL", "mysql://root@localhost/db", "DATABASE_URL: must be a URL with scheme postgres"),
        ("DATABASE_URL", "postgres://127.0.0.1:5432/", "DATABASE_URL: names no database"),
        ("REDIS_URL", "http://localhost:6379", "REDIS_URL: must be a URL with scheme redis"),
        ("KAFKA_BOOTSTRAP_SERVERS", "localhost", "KAFKA_BOOTSTRAP_SERVERS: must be host:port"),
        ("DEBUG", "maybe", "DEBUG: must be a boolean"),
        ("INGEST_BATCH_SIZE", "lots", "INGEST_BATCH_SIZE: must be an integer"),
        ("KAFKA_SECURITY_PROTOCOL", "TLS", "KAFKA_SECURITY_PROTOCOL: must be one of"),
        ("DLQ_REQUEUE_RATE_PER_SECOND", "0", "DLQ_REQUEUE_RATE_PER_SECOND: must be >= 0.1"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT: must be json or text"),
        ("SENTRY_DSN", "not-a-dsn", "SENTRY_DSN: is not a valid Sentry DSN"),
        ("INGEST_METRICS_PORT", "70000", "INGEST_METRICS_PORT: must be a TCP port"),
        ("INGEST_METRICS_ADDR", "everywhere", "INGEST_METRICS_ADDR: must be an IP address"),
        ("SECURE_HTTPS", "sometimes", "SECURE_HTTPS: must be a boolean"),
        ("CSRF_TRUSTED_ORIGINS", "admin.example.com", "CSRF_TRUSTED_ORIGINS: each origin must be scheme://host"),
        ("CSRF_TRUSTED_ORIGINS", "https://ok.example.com,https://", "CSRF_TRUSTED_ORIGINS: each origin must be"),
        ("METRICS_TOKEN", "short", "METRICS_TOKEN: must be at least 16"),
        ("METRICS_TOKEN", "has a space in the middle of it", "METRICS_TOKEN: must be at least 16"),
        ("METRICS_CACHE_SECONDS", "-1", "METRICS_CACHE_SECONDS: must be >= 0"),
        ("DLQ_ADMIN_REQUEUE_SECONDS", "0", "DLQ_ADMIN_REQUEUE_SECONDS: must be >= 1"),
    ],
)
def test_bad_setting_fails_with_one_clear_line(name, value, fragment):
    result = run_check(**{name: value})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]


def test_secrets_are_not_echoed():
    result = run_check(DATABASE_URL="mysql://admin:hunter2@localhost/db")
    assert result.returncode == 2
    assert "hunter2" not in result.stderr
    result = run_check(METRICS_TOKEN="hunter2 hunter2 hunter2")
    assert result.returncode == 2 and "hunter2" not in result.stderr


def test_check_deploy_passes_with_secure_https():
    """The production settings: SECURE_HTTPS, a real SECRET_KEY and ALLOWED_HOSTS."""
    result = check_deploy(SECURE_HTTPS="true")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout + result.stderr


def test_check_deploy_fails_without_secure_https():
    result = check_deploy(SECURE_HTTPS=None)
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr, warning


def test_secure_https_turns_on_cookies_hsts_redirect_and_the_proxy_header():
    names = (
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SECURE_HSTS_PRELOAD",
        "SECURE_PROXY_SSL_HEADER",
        "SECURE_REDIRECT_EXEMPT",
        "X_FRAME_OPTIONS",
        "AUTH_PASSWORD_VALIDATORS",
    )
    on = settings_under(*names, SECURE_HTTPS="true")
    assert on["SESSION_COOKIE_SECURE"] and on["CSRF_COOKIE_SECURE"] and on["SECURE_SSL_REDIRECT"]
    assert on["SECURE_HSTS_SECONDS"] == 365 * 24 * 3600 and on["SECURE_HSTS_INCLUDE_SUBDOMAINS"]
    assert on["SECURE_HSTS_PRELOAD"] and on["X_FRAME_OPTIONS"] == "DENY"
    assert on["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert on["SECURE_REDIRECT_EXEMPT"] == ["^healthz$", "^readyz$", "^metrics$"], "probes work over plain http"
    assert {v["NAME"].rsplit(".", 1)[1] for v in on["AUTH_PASSWORD_VALIDATORS"]} == {
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    }

    off = settings_under(*names)  # `make up` and docker-compose.yml serve plain http
    assert not (off["SESSION_COOKIE_SECURE"] or off["CSRF_COOKIE_SECURE"] or off["SECURE_SSL_REDIRECT"])
    assert off["SECURE_HSTS_SECONDS"] == 0 and off["SECURE_PROXY_SSL_HEADER"] is None
    assert len(off["AUTH_PASSWORD_VALIDATORS"]) == 4

    tuned = settings_under(
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_PRELOAD",
        SECURE_HTTPS="1",
        SECURE_HSTS_SECONDS="3600",
        SECURE_HSTS_PRELOAD="false",
    )
    assert tuned == {"SECURE_HSTS_SECONDS": 3600, "SECURE_HSTS_PRELOAD": False}


def test_csrf_trusted_origins_metrics_token_and_ingest_address_are_read():
    names = ("CSRF_TRUSTED_ORIGINS", "METRICS_TOKEN", "INGEST_METRICS_ADDR", "METRICS_CACHE_SECONDS")
    assert settings_under(*names) == {
        "CSRF_TRUSTED_ORIGINS": [],
        "METRICS_TOKEN": None,
        "INGEST_METRICS_ADDR": "127.0.0.1",
        "METRICS_CACHE_SECONDS": 5.0,
    }
    assert settings_under(
        *names,
        CSRF_TRUSTED_ORIGINS="https://admin.example.com, https://*.example.org",
        METRICS_TOKEN="  0123456789abcdef-token  ",
        INGEST_METRICS_ADDR="0.0.0.0",
        METRICS_CACHE_SECONDS="0",
    ) == {
        "CSRF_TRUSTED_ORIGINS": ["https://admin.example.com", "https://*.example.org"],
        "METRICS_TOKEN": "0123456789abcdef-token",
        "INGEST_METRICS_ADDR": "0.0.0.0",
        "METRICS_CACHE_SECONDS": 0.0,
    }
    assert settings_under("INGEST_METRICS_ADDR", INGEST_METRICS_ADDR="::")["INGEST_METRICS_ADDR"] == "::"
