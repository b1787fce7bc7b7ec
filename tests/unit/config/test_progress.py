"""Long commands say how far they have got: a bar on a terminal, plain lines with the
count and the time left in a file or a pipe; --all-open says how many before it asks."""

from __future__ import annotations

import io
import json
import re
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from config.progress import Progress, duration
from dlq.models import DeadLetter
from leads.models import Business
from tests.support.dead_letters import dead_letters
from tests.support.events import BUSINESS_ID, TENANT_ID, encode, event
from whatsapp.models import ProcessedMessage


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_every_few_seconds_with_the_time_left():
    out, clock = io.StringIO(), Clock()
    with Progress(out, "requeued", 5000, every_seconds=5, clock=clock) as progress:
        for _ in range(5000):
            clock.now += 0.125  # 8 a second
            progress.advance()
    lines = out.getvalue().splitlines()
    assert lines[0] == "requeued 40/5000, 10 m left"  # 4960 at 8 a second: 620 s
    assert lines[9] == "requeued 400/5000, 9 m 35 s left"
    assert lines[-1] == "requeued 5000/5000, done in 10 m"
    assert len(lines) == 125  # one every 5 s


def test_a_short_job_prints_nothing_more_and_an_unknown_total_counts_up():
    out, clock = io.StringIO(), Clock()
    with Progress(out, "deleted", 3, every_seconds=5, clock=clock) as progress:
        progress.advance(3)
    assert out.getvalue() == ""
    with Progress(out, "read", None, every_seconds=5, clock=clock) as progress:
        clock.now += 6
        progress.advance(40)
    assert out.getvalue() == "read 40\n"
    assert [duration(s) for s in (0, 59, 61, 600, 3600, 3900)] == ["0 s", "59 s", "1 m 1 s", "10 m", "1 h", "1 h 5 m"]


def test_a_terminal_gets_a_bar_with_the_count():
    out = Terminal()
    with Progress(out, "requeued", 10, every_seconds=5) as progress:
        progress.advance(3)
        progress.say("requeued #7")
        progress.advance(7)
    text = out.getvalue()
    assert "requeued #7" in text and "10/10" in text and "requeued 10/10, done" not in text


@pytest.fixture
def late_entries() -> list[DeadLetter]:
    """Dead letters of a business that did not exist yet; it does now, so they requeue."""
    entries = dead_letters([encode(event(f"late-{i}", business_id="late-bakery")) for i in range(6)])
    Business.objects.create(business_id="late-bakery", tenant_id=TENANT_ID, display_name="Late Bakery")
    return entries


@pytest.mark.django_db
def test_dlq_requeue_writes_progress_lines_when_not_on_a_terminal(late_entries, settings):
    settings.COMMAND_PROGRESS_SECONDS = 0
    out, err = io.StringIO(), io.StringIO()
    call_command("dlq", "requeue", "--all-open", "--rate", "1000", stdout=out, stderr=err)
    lines = out.getvalue().splitlines()
    progress = [line for line in lines if re.fullmatch(r"requeued \d+/6, .*", line)]
    assert len(progress) == 6 and progress[0].startswith("requeued 1/6, ")
    assert progress[0].endswith(" left") and progress[-1].startswith("requeued 6/6, done in ")
    assert [line for line in lines if line.startswith("requeued #")] == [
        f"requeued #{e.pk} (saga run 1)" for e in late_entries
    ]
    assert lines[-1] == "requeued 6 of 6, 0 refused"
    assert "--all-open will requeue 6 open dead letters, 1000 a second: about 0 s." in err.getvalue()
    assert not DeadLetter.objects.filter(status="OPEN").exists()


@pytest.mark.django_db
def test_dlq_requeue_all_open_says_how_many_before_asking(late_entries, monkeypatch):
    asked = []
    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or "no")
    err = io.StringIO()
    with pytest.raises(CommandError) as refused:
        call_command("dlq", "requeue", "--all-open", "--rate", "0.5", stdout=io.StringIO(), stderr=err)
    assert refused.value.returncode == 2 and "nothing requeued" in str(refused.value)
    assert err.getvalue().strip() == "--all-open will requeue 6 open dead letters, 0.5 a second: about 12 s."
    assert asked == ["Type 'yes' to go on: "]
    assert DeadLetter.objects.filter(status="OPEN").count() == 6

    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("--yes must not ask"))
    out = io.StringIO()
    call_command("dlq", "requeue", "--all-open", "--rate", "1000", "--yes", stdout=out, stderr=io.StringIO())
    assert out.getvalue().splitlines()[-1] == "requeued 6 of 6, 0 refused"


@pytest.mark.django_db
def test_dlq_purge_and_sweep_write_progress_lines(settings):
    settings.COMMAND_PROGRESS_SECONDS = 0
    old = dead_letters([b"not json %d" % i for i in range(4)])
    DeadLetter.objects.filter(pk__in=[e.pk for e in old]).update(
        status="DISCARDED", created_at=timezone.now() - timedelta(days=100)
    )
    out = io.StringIO()
    call_command("dlq", "purge", "--older-than", "30", "--yes", stdout=out)
    assert out.getvalue().splitlines() == [
        "deleted 4/4, done in 0 s",
        "deleted 4",
    ], "purged in one chunk of up to 500"

    Business.objects.create(business_id=BUSINESS_ID, tenant_id=TENANT_ID, display_name="Acme")
    long_ago = timezone.now() - timedelta(days=settings.INBOX_RETENTION_DAYS + 1)
    for i in range(3):
        ProcessedMessage.objects.create(
            processing_id=f"old-{i}", status="PROCESSED", business_id=BUSINESS_ID, payload={}, finished_at=long_ago
        )
    out = io.StringIO()
    call_command("sweep", stdout=out)
    # (Nothing is stuck, and the test's transaction never commits, so nothing is re-driven.)
    assert out.getvalue().splitlines() == [
        "purged 3/3, done in 0 s",
        "sweep: 0 stuck, re-driven none, purged 3",
    ]
    err = io.StringIO()
    call_command("sweep", "--json", stdout=(json_out := io.StringIO()), stderr=err)
    assert json.loads(json_out.getvalue()) == {"purged": 0, "redriven": {}, "statuses": 0, "stuck": 0}
