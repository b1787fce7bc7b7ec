"""`make demo` runs the whole pipeline and accounts for every record it sent."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_accounts_for_every_record():
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "DATABASE_URL"}}
    # The demo makes its own database on the same server the tests use.
    db = settings.DATABASES["default"]
    env["DATABASE_URL"] = (
        f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/postgres"
    )
    env["KAFKA_BOOTSTRAP_SERVERS"] = settings.KAFKA_BOOTSTRAP_SERVERS
    result = subprocess.run(
        [sys.executable, "-m", "devtools.demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    counts = {label.strip(): int(n) for label, n in re.findall(r"^(\S[^\d\n]*?)\s+(\d+)\b", out, re.M)}
    sent = counts["records sent to Kafka"]
    assert counts["processed"] + counts["duplicates"] + counts["dead-lettered"] == sent, out
    assert counts["duplicates"] == 3
    assert "non_retryable (at NOTIFY_SALES)" in out
    for reason in ("invalid_payload", "unknown_business", "tenant_mismatch", "unsupported_schema"):
        assert f"{reason} (at ingest)" in out
