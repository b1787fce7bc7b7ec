"""Dead-letter test helpers shared by the unit and integration tests of `manage.py dlq`:
dead letters written by the real intake code, and management commands run as a process."""

from __future__ import annotations

import json
import subprocess
import sys

from django.utils import timezone

from dlq.models import DeadLetter
from tests.conftest import ROOT
from whatsapp.ingest.intake import take_in
from whatsapp.kafka import Record


def dead_letters(values: list[bytes], first_offset: int = 0) -> list[DeadLetter]:
    """Dead letters written by the real intake code, as ingest writes them."""
    records = [
        Record(
            topic="ai.process.result",
            partition=1,
            offset=first_offset + i,
            value=v,
            key=b"lead-1",
            timestamp=timezone.now(),
        )
        for i, v in enumerate(values)
    ]
    take_in(records)
    return list(DeadLetter.objects.filter(kafka_offset__in=[r.offset for r in records]).order_by("kafka_offset"))


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def stats(env: dict[str, str]) -> dict:
    done = manage(env, "pipeline_stats", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
