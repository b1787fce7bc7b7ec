"""`manage.py dlq` in this process: selection, output, show, resolve, discard,
purge and exit codes."""

from __future__ import annotations

import io
import json
import logging
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from dlq.models import DeadLetter
from tests.support.dead_letters import dead_letters
from tests.support.events import encode, event, invalid_values


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("dlq", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_list_show_resolve_discard_and_purge(caplog):
    unknown = dead_letters([encode(event(f"late-{i}", business_id="late-bakery")) for i in range(2)])
    bad_utf8, not_json = dead_letters([invalid_values()["bad_utf8"], b"not json"], first_offset=10)
    old_closed, old_open = dead_letters([b"old 1", b"old 2"], first_offset=20)
    DeadLetter.objects.filter(pk__in=[old_closed.pk, old_open.pk]).update(
        created_at=timezone.now() - timedelta(days=100)
    )
    DeadLetter.objects.filter(pk=old_closed.pk).update(status="DISCARDED")

    listed = json.loads(run("list", "--json", "--reason", "unknown_business"))
    assert {e["id"] for e in listed} == {e.pk for e in unknown}
    assert {e["processing_id"] for e in listed} == {"late-0", "late-1"} and "raw_value" not in listed[0]
    assert {e["id"] for e in json.loads(run("list", "--json", "--status", "DISCARDED"))} == {old_closed.pk}
    yesterday = (timezone.now() - timedelta(days=1)).date().isoformat()
    recent = json.loads(run("list", "--json", "--since", yesterday))
    assert {e["id"] for e in recent} == {*(e.pk for e in unknown), bad_utf8.pk, not_json.pk}
    assert [e["id"] for e in json.loads(run("list", "--json", "--search", "late-1"))] == [unknown[1].pk]
    assert {e["id"] for e in json.loads(run("list", "--json", "--business", "late-bakery"))} == {e.pk for e in unknown}
    assert len(json.loads(run("list", "--json", "--limit", "2"))) == 2
    table = run("list", "--reason", "unknown_business")
    assert "late-0" in table and "late-1" in table and "not json" not in table

    shown = json.loads(run("show", str(unknown[0].pk), "--json"))
    assert shown["payload"]["processing_id"] == "late-0" and shown["reason"] == "unknown_business"
    assert shown["kafka"]["offset"] == 0 and shown["kafka"]["key"] == {"encoding": "utf-8", "data": "lead-1"}
    assert json.loads(run("show", str(bad_utf8.pk), "--json"))["raw_value"]["encoding"] == "base64"
    assert "late-bakery" in run("show", str(unknown[0].pk))
    with pytest.raises(CommandError) as missing:
        run("show", "999999")
    assert missing.value.returncode == 1

    # --by names an active admin user, never free text: anyone else is refused and nothing changes.
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("ana")
    get_user_model().objects.create_user("gone", is_active=False)
    for who in ("the-ceo", "gone"):
        with pytest.raises(CommandError) as nobody:
            run("resolve", str(unknown[0].pk), "--note", "entered by hand", "--by", who)
        assert nobody.value.returncode == 2 and f"--by {who!r}: no active user" in str(nobody.value)
    assert DeadLetter.objects.get(pk=unknown[0].pk).status == "OPEN"
    assert "resolved 1 of 1" in run("resolve", str(unknown[0].pk), "--note", "entered by hand", "--by", "ana")
    unknown[0].refresh_from_db()
    assert (unknown[0].status, unknown[0].resolution_note, unknown[0].closed_by) == (
        "RESOLVED",
        "entered by hand",
        "ana",
    )
    with pytest.raises(CommandError) as twice:
        run("resolve", str(unknown[0].pk), "--note", "again")
    assert twice.value.returncode == 1 and "1 of 1 not resolved" in str(twice.value)
    assert "would mark 3 discarded" in run("discard", "--reason", "invalid_payload", "--note", "junk", "--dry-run")
    assert "discarded 2 of 2" in run("discard", "--reason", "invalid_payload", "--since", yesterday, "--note", "junk")
    assert set(DeadLetter.objects.filter(pk__in=[bad_utf8.pk, not_json.pk]).values_list("status", flat=True)) == {
        "DISCARDED"
    }
    assert DeadLetter.objects.get(pk=old_open.pk).status == "OPEN", "older than --since, not selected"
    orphan = DeadLetter.objects.create(
        processing_id="purged-long-ago",
        stage="NOTIFY_SALES",
        reason="non_retryable",
        saga_run=1,
        payload=json.loads(encode(event("purged-long-ago"))),
    )
    why = io.StringIO()
    with pytest.raises(CommandError) as gone:
        call_command("dlq", "requeue", str(orphan.pk), stdout=io.StringIO(), stderr=why)
    assert gone.value.returncode == 1 and "purged-long-ago has no inbox row any more" in why.getvalue()
    orphan.refresh_from_db()
    assert orphan.status == "OPEN"
    for usage in (["requeue"], ["requeue", str(unknown[1].pk), "--reason", "x"], ["resolve", "--note", "no selection"]):
        with pytest.raises(CommandError) as error:
            run(*usage)
        assert error.value.returncode == 2, usage

    assert run("purge", "--older-than", "30", "--dry-run").strip() == "would delete 1"
    # Off a terminal (as here) a purge without --yes asks nobody and deletes nothing.
    refusal = io.StringIO()
    with pytest.raises(CommandError) as refused:
        call_command("dlq", "purge", "--older-than", "30", "--include-open", stdout=io.StringIO(), stderr=refusal)
    assert refused.value.returncode == 2
    assert "purge will delete 2 dead-letter entries, OPEN ones included" in str(refused.value)
    assert "Refused without confirmation: add --yes. Nothing deleted." in str(refused.value)
    assert DeadLetter.objects.filter(pk__in=[old_closed.pk, old_open.pk]).count() == 2
    with caplog.at_level(logging.WARNING, logger="dlq"):
        assert run("purge", "--older-than", "30", "--yes", "--by", "ana").strip() == "deleted 1"
    assert "dlq purge: ana deleted 1 dead letter(s) created more than 30 day(s) ago (closed ones only)" in [
        r.getMessage() for r in caplog.records
    ]
    assert not DeadLetter.objects.filter(pk=old_closed.pk).exists()
    assert DeadLetter.objects.filter(pk=old_open.pk).exists(), "OPEN entries are kept"
    assert run("purge", "--older-than", "30", "--include-open", "--yes").strip() == "deleted 1"
    assert DeadLetter.objects.count() == 5
