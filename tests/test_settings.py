"""A missing or malformed setting stops the process with one line naming it."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOOD = {"SECRET_KEY": "a-perfectly-long-secret-key-for-this-test-0123456789", "DEBUG": "0"}


def run_check(**env_overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    env.update(GOOD)
    for key, value in env_overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_good_settings_pass():
    result = run_check()
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name, value, fragment", [
    ("SECRET_KEY", None, "SECRET_KEY: is required"),
    ("SECRET_KEY", "short", "SECRET_KEY: must be at least 32"),
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
])
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
