"""`make demo` drives the whole loop (webhook, relay, classifier, ingest, worker, Cloud API) and
accounts for every webhook message and every record it sent."""

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
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
    # A database and a Redis database of this test's own: another run's demo must not share them.
    name = f"demo_{uuid.uuid4().hex[:8]}"
    env["DEMO_DATABASE"] = name
    env["DEMO_REDIS_DB"] = settings.REDIS_URL.rsplit("/", 1)[1]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "devtools.demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
    finally:
        with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    counts = {label.strip(): int(n) for label, n in re.findall(r"^\s*(\S[^\d\n]*?)\s+(\d+)\b", out, re.M)}

    # The loop, stage by stage: 8 customer messages (7 texts in en/es/pt and an image) in 10
    # deliveries (one redelivered, one forged), each published, classified and run; two replies' statuses.
    assert counts["webhook deliveries POSTed"] == 13, out
    assert counts["accepted"] == 12 and counts["refused, bad signature"] == 1, out
    for stage in ("customer messages stored", "requests published (relay)", "classified (classify)"):
        assert counts[stage] == 8, (stage, out)
    assert counts["runs processed"] == 7 and counts["runs dead-lettered"] == 1, out
    assert counts["replies sent to the Cloud API"] == 8, out
    assert counts["replies delivered"] == counts["replies read"] == counts["replies failed"] == 1, out
    assert "delivery_failed (at reply)" in out

    # Every result on the topic (classified or pre-labelled) ended processed, duplicate or dead-lettered.
    sent = counts["results on the result topic"]
    assert sent == 45 + 8, out
    assert counts["processed"] + counts["duplicates"] + counts["dead-lettered"] == sent, out
    assert counts["duplicates"] == 3
    assert "non_retryable (at NOTIFY_SALES)" in out
    for reason in ("invalid_payload", "unknown_business", "tenant_mismatch", "unsupported_schema"):
        assert f"{reason} (at ingest)" in out

    # The order received 25 hours ago: its customer's window had closed, so its confirmation
    # went as the bakery's approved template, the stand-in answering it with a wamid.
    assert counts["sent as a template"] == 1, out
    assert "template order_confirmed [en_US]: 1" in out, out
    # The opt-out: STOP gets its one confirmation; the same customer's order then is made, unanswered.
    assert counts["customers opted out (STOP)"] == 1, out
    assert "(confirmation sent; then an order: 1 made, reply skipped_opted_out)" in out, out
