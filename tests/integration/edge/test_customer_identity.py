"""Customers as Meta names them since 2026, through the whole loop on real processes (web,
relay, classifier, ingest, a Celery worker, Kafka and a stand-in Cloud API): a customer who
adopted a username writes with no phone number, is answered by BSUID, and later shares the
number without becoming a second lead; a system notice of a changed number moves the lead;
a delivery with one unreadable message runs the others; and no log line, metric label or
task argument of the loop carries the customer's number."""

from __future__ import annotations

import pytest

from leads.models import Lead, LeadActivity
from tests.support import meta
from tests.support.loop import logs, post
from tests.support.observability import Scrape
from tests.support.processes import wait_until
from whatsapp.contracts.request import processing_id_for
from whatsapp.models import InboundMessage, ProcessedMessage

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

BSUID = "US.13491208655302741918"
PARENT = "US.ENT.11815799212886844830"
NUMBER = "15550009988"
METRICS_TOKEN = "scrape-token-for-the-identity-test"


@pytest.fixture
def worker_log_level() -> str:
    # At DEBUG the worker logs each task it runs with its arguments (TaskPool: Apply ...).
    return "DEBUG"


def username_delivery(message: dict, *, with_number: str = "") -> dict:
    """A delivery from a customer who adopted a username: the contact names the BSUID (and the
    number only when the customer shared it), as Meta's BSUID reference shows."""
    delivery = meta.message_delivery(message)
    contact: dict = {"profile": {"name": "Ana", "username": "anabakes"}, "user_id": BSUID, "parent_user_id": PARENT}
    if with_number:
        contact["wa_id"] = with_number
    delivery["entry"][0]["changes"][0]["value"]["contacts"] = [contact]
    return delivery


def processed(*wamids: str) -> bool:
    pids = [processing_id_for(w) for w in wamids]
    return ProcessedMessage.objects.filter(processing_id__in=pids, status="PROCESSED").count() == len(pids)


def test_a_username_customer_is_answered_by_bsuid_and_keeps_one_lead_when_the_number_appears(
    loop, settings, live_server
):
    web, api, started = loop
    settings.METRICS_TOKEN = METRICS_TOKEN
    # 1. No `from` at all: the BSUID is in the message's from_user_id and the contact card.
    first = meta.text_message("How much are the croissants?")
    del first["from"]
    first["from_user_id"] = BSUID
    assert post(web, username_delivery(first)) == 200
    # 2. `from` holding the BSUID.
    second = meta.text_message("And the sourdough, what does it cost?", sender=BSUID)
    assert post(web, username_delivery(second)) == 200
    wait_until(lambda: processed(first["id"], second["id"]), timeout=120, message=f"both processed\n{logs(started)}")

    lead = Lead.objects.get(user_id=BSUID)
    assert Lead.objects.count() == 1, "one customer, one lead"
    assert (lead.wa_id, lead.username, lead.parent_user_id) == ("", "anabakes", PARENT)
    assert lead.lead_id.startswith("ld.")
    replies = api.sent_to(BSUID)
    assert len(replies) == 2, api.texts
    assert all(r["recipient"] == BSUID and "to" not in r for r in replies), "addressed by BSUID, as Meta documents"

    # 3. The same customer later shares the number: the same lead, now with both identifiers.
    third = meta.text_message("What does a baguette cost?", sender=NUMBER)
    assert post(web, username_delivery(third, with_number=NUMBER)) == 200
    wait_until(lambda: processed(third["id"]), timeout=120, message=f"third processed\n{logs(started)}")
    lead.refresh_from_db()
    assert Lead.objects.count() == 1 and lead.wa_id == NUMBER
    assert LeadActivity.objects.filter(lead=lead, kind="identity_joined").get().detail["added"] == ["wa_id"]
    assert [r.get("to") for r in api.sent_to(NUMBER)] == [NUMBER], "a known number is where replies go"

    # Nothing of the loop names the number: the processes' logs (the worker's at DEBUG, which
    # prints every task's arguments), the web process's metrics.
    output = "".join(p.output() for p in started)
    assert processing_id_for(third["id"]) in output and "TaskPool: Apply" in output, "the grep sees task arguments"
    assert NUMBER not in output
    scrape = Scrape.get(live_server.url + "/metrics", METRICS_TOKEN)
    assert NUMBER not in scrape.text and BSUID not in scrape.text
    assert "whatsapp_webhook_received" in scrape.text


def test_a_changed_number_moves_the_lead_and_is_not_answered(loop):
    web, api, started = loop
    old, new = "15550001111", "15550002222"
    hello = meta.text_message("How much are the croissants?", sender=old)
    assert post(web, meta.message_delivery(hello)) == 200
    wait_until(lambda: processed(hello["id"]), timeout=120, message=f"processed\n{logs(started)}")
    lead = Lead.objects.get(wa_id=old)

    notice = {
        "from": old,
        "id": meta.wamid(),
        "timestamp": meta.now_ts(),
        "type": "system",
        "system": {"body": f"Ana changed from {old} to {new}", "new_wa_id": new, "type": "user_changed_number"},
    }
    delivery = meta.message_delivery(notice)
    del delivery["entry"][0]["changes"][0]["value"]["contacts"]  # Meta sends none with a system notice
    assert post(web, delivery) == 200
    lead.refresh_from_db()
    assert lead.wa_id == new
    changed = LeadActivity.objects.get(lead=lead, kind="identity_changed")
    assert changed.detail == {"changed": ["wa_id"], "source": "user_changed_number"}
    assert InboundMessage.objects.get(wamid=notice["id"]).state == InboundMessage.State.APPLIED
    again = meta.text_message("And the sourdough?", sender=new)
    assert post(web, meta.message_delivery(again)) == 200
    wait_until(lambda: processed(again["id"]), timeout=120, message=f"processed\n{logs(started)}")
    assert (
        Lead.objects.count() == 1
        and ProcessedMessage.objects.get(processing_id=processing_id_for(again["id"])).lead_record_id == lead.pk
    )
    assert not ProcessedMessage.objects.filter(processing_id=processing_id_for(notice["id"])).exists()
    assert len(api.texts) == 2, "the notice got no reply"
    assert all(new not in text.get("text", {}).get("body", "") for text in api.texts)


def test_a_changed_bsuid_moves_the_lead(loop):
    web, api, started = loop
    newer = "US.99999999999999999999"
    first = meta.text_message("How much are the croissants?", sender=BSUID)
    assert post(web, username_delivery(first)) == 200
    wait_until(lambda: processed(first["id"]), timeout=120, message=f"processed\n{logs(started)}")
    notice = {
        "from": BSUID,
        "id": meta.wamid(),
        "timestamp": meta.now_ts(),
        "type": "system",
        "system": {"body": "Ana changed their account", "type": "user_changed_user_id", "new_user_id": newer},
    }
    assert post(web, username_delivery(notice)) == 200
    lead = Lead.objects.get()
    assert lead.user_id == newer
    assert LeadActivity.objects.filter(lead=lead, kind="identity_changed").exists()
    later = meta.text_message("Do you have baguettes?", sender=newer)
    delivery = meta.message_delivery(later)
    delivery["entry"][0]["changes"][0]["value"]["contacts"] = [{"profile": {"name": "Ana"}, "user_id": newer}]
    assert post(web, delivery) == 200
    wait_until(lambda: processed(later["id"]), timeout=120, message=f"processed\n{logs(started)}")
    assert Lead.objects.count() == 1
    assert len(api.sent_to(newer)) == 1 and len(api.texts) == 2, "the notice got no reply"


def test_a_delivery_whose_middle_message_is_unreadable_runs_the_other_two(loop, admin_client):
    web, api, started = loop
    one = meta.text_message("How much are the croissants?", sender="15550003331")
    broken = meta.interactive_message("x", sender="15550003331")
    broken["interactive"] = {"type": "button_reply"}  # no reply in it: nothing to read
    three = meta.text_message("Do you have sourdough?", sender="15550003331")
    assert post(web, meta.message_delivery(one, broken, three)) == 200
    wait_until(lambda: processed(one["id"], three["id"]), timeout=120, message=f"both processed\n{logs(started)}")
    row = InboundMessage.objects.get(state=InboundMessage.State.UNREADABLE)
    assert (row.wamid, row.json_path) == (broken["id"], "entry[0].changes[0].value.messages[1]")
    assert len(api.texts) == 2
    page = admin_client.get("/admin/whatsapp/inboundmessage/?state=UNREADABLE").content.decode()
    assert "entry[0].changes[0].value.messages[1]" in page and "Unreadable" in page.replace(
        "could not be read", "Unreadable"
    )
