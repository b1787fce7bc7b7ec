"""Erasing a customer after the whole loop (tests/support/loop.py: a signed webhook through the
real view, the relay, the reference classifier, ingest and a worker): a dead letter of theirs
and a DLQ export made, then `erase_customer`, then a `pg_dump --data-only` of the database
holds none of their number, name or texts, while the other customer's are all there and the
activity log still refuses updates and deletes."""

from __future__ import annotations

import io
import os
import subprocess

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from dlq import export
from dlq.models import DeadLetter
from leads.models import LeadActivity
from tests.support import meta
from tests.support.loop import logs, post
from tests.support.processes import wait_until
from whatsapp.contracts.request import processing_id_for
from whatsapp.models import DeliveryStatus, OutboundMessage, ProcessedMessage

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ANA, LUCIA = "15550000031", "15550000032"
ANA_TEXT, LUCIA_TEXT = "Hola, ¿cuánto cuestan los croissants?", "Hi, I'd like 2 sourdough loaves please"


def database_dump() -> str:
    db = connection.settings_dict
    env = {**os.environ, "PGPASSWORD": db.get("PASSWORD") or ""}
    argv = [
        "pg_dump",
        "--data-only",
        "-h",
        db["HOST"] or "127.0.0.1",
        "-p",
        str(db["PORT"] or 5432),
        "-U",
        db["USER"],
        db["NAME"],
    ]
    return subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout


def test_an_erased_customer_is_nowhere_in_the_database_and_the_other_is_intact(loop):
    web, _api, started = loop
    ana = meta.text_message(ANA_TEXT, sender=ANA)
    lucia = meta.text_message(LUCIA_TEXT, sender=LUCIA)
    assert post(web, meta.message_delivery(ana, name="Ana Souza")) == 200
    assert post(web, meta.message_delivery(lucia, name="Lucia Prado")) == 200
    pids = [processing_id_for(ana["id"]), processing_id_for(lucia["id"])]
    wait_until(
        lambda: ProcessedMessage.objects.filter(processing_id__in=pids, status="PROCESSED").count() == 2,
        timeout=120,
        message=f"both processed\n{logs(started)}",
    )
    # Ana's reply could not be delivered: her run is dead-lettered.
    reply = OutboundMessage.objects.get(processing_id=pids[0])
    error = {"code": 131047, "title": "Re-engagement message", "message": "Re-engagement message"}
    assert post(web, meta.status_delivery(meta.status(reply.wamid, "failed", recipient=reply.to, errors=[error])))
    wait_until(
        lambda: (
            DeadLetter.objects.filter(processing_id=pids[0]).exists()
            and not DeliveryStatus.objects.filter(outcome="").exists()
        ),
        timeout=60,
        message=f"dead-lettered\n{logs(started)}",
    )
    before = "".join(export.jsonl(export.rows(DeadLetter.objects.all(), with_record=True)))
    assert ANA in before and ANA_TEXT in before

    out = io.StringIO()
    call_command("erase_customer", "--business", "acme-bakery", "--wa-id", ANA, "--by", "dpo", stdout=out)
    assert "customer erased" in out.getvalue()

    dump = database_dump()
    for gone in (ANA, "Ana Souza", ANA_TEXT):
        assert gone not in dump, gone
    for kept in (LUCIA, "Lucia Prado", LUCIA_TEXT):
        assert kept in dump, kept
    after = "".join(export.jsonl(export.rows(DeadLetter.objects.all(), with_record=True)))
    assert ANA not in after and ANA_TEXT not in after

    activity = LeadActivity.objects.filter(kind="customer_erased").get()
    for sql in (
        "UPDATE leads_leadactivity SET kind = 'x' WHERE id = %s",
        "DELETE FROM leads_leadactivity WHERE id = %s",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [activity.pk])
