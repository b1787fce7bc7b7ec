"""The opt-out check (issue 21): STOP in English, Spanish and Portuguese opts the customer out
(one confirmation, then an order message creates the order and sends no reply), START opts
them back in; through real Kafka, ingest and a Celery worker, to the stand-in Cloud API."""

from __future__ import annotations

import pytest

from dlq.models import DeadLetter
from leads.models import Lead, LeadActivity, Order, ReviewFlag
from tests.support import kafka
from tests.support.events import encode, event, now_iso
from tests.support.loop import TOKEN, CloudApi
from tests.support.processes import wait_until
from whatsapp.models import OutboundMessage, ProcessedMessage

pytestmark = pytest.mark.django_db(transaction=True)

PHONE_NUMBER_ID = "106540352242922"
# language -> (the customer's number, their opt-out keyword, their opt-in keyword, the start
# of the confirmations they must get)
CUSTOMERS = {
    "en": ("15550100001", "STOP", "Start", "You will no longer receive", "You will receive messages"),
    "es": ("15550100002", "¡Baja!", "ALTA", "Ya no recibirás", "Volverás a recibir"),
    "pt": ("15550100003", "sair", "Voltar.", "Você não receberá mais", "Você voltará a receber"),
}


def message(language: str, step: str, text: str, *, intent: str, confidence: float) -> tuple[bytes, bytes]:
    wa_id = CUSTOMERS[language][0]
    entities = {"language": language}
    if intent == "ORDER_REQUEST":
        entities["products"] = [{"sku": "SD-01", "name": "sourdough loaf", "quantity": 2}]
    body = event(
        f"optout-{language}-{step}",
        lead_id=f"optout-lead-{language}",
        customer={"wa_id": wa_id, "name": f"Customer {language}"},
        message_id=f"wamid.optout-{language}-{step}",
        message={"text": text, "received_at": now_iso(minutes_ago=0.5)},
        intent=intent,
        confidence=confidence,
        entities=entities,
    )
    return body["lead_id"].encode(), encode(body)


def run(bootstrap, topic, step: str, records: list[tuple[bytes, bytes]]) -> None:
    """Produce one message per customer and wait until all three are processed."""
    kafka.produce(bootstrap, topic, records)
    wait_until(
        lambda: ProcessedMessage.objects.filter(processing_id__endswith=f"-{step}", status="PROCESSED").count() == 3,
        timeout=90,
        message=f"the three {step} messages processed",
    )


def order(language: str, step: str) -> tuple[bytes, bytes]:
    return message(language, step, "2 sourdough loaves please", intent="ORDER_REQUEST", confidence=0.97)


def test_stop_in_three_languages_opts_out_and_start_opts_back_in(
    httpserver, business, bootstrap, topic, start_ingest, start_worker
):
    business.phone_number_id = PHONE_NUMBER_ID
    business.save()
    api = CloudApi()
    httpserver.expect_request(f"/v21.0/{PHONE_NUMBER_ID}/messages", method="POST").respond_with_handler(api)
    start_worker(env={"WHATSAPP_GRAPH_BASE_URL": httpserver.url_for("").rstrip("/"), "WHATSAPP_ACCESS_TOKEN": TOKEN})
    start_ingest(topic)

    # 1. The keyword, whatever the AI made of it (an unknown intent, or an order it read in).
    run(
        bootstrap,
        topic,
        "stop",
        [
            message("en", "stop", CUSTOMERS["en"][1], intent="UNKNOWN", confidence=0.3),
            message("es", "stop", CUSTOMERS["es"][1], intent="UNKNOWN", confidence=0.5),
            message("pt", "stop", CUSTOMERS["pt"][1], intent="ORDER_REQUEST", confidence=0.9),
        ],
    )
    for language, (wa_id, _, _, stopped, _) in CUSTOMERS.items():
        (confirmation,) = api.sent_to(wa_id)
        assert confirmation["type"] == "text" and confirmation["text"]["body"].startswith(stopped), language
        lead = Lead.objects.get(wa_id=wa_id)
        assert lead.opted_out_at is not None and lead.opt_out_source == "keyword"
        activity = LeadActivity.objects.get(lead=lead, kind="opted_out")
        assert activity.processing_id == f"optout-{language}-stop" and activity.detail == {
            "source": "keyword",
            "by": "",
        }
        assert not Order.objects.filter(lead=lead).exists(), "a STOP read as an order orders nothing"

    # 2. An order while opted out: the order is made, no reply goes, nobody is asked to follow up.
    run(bootstrap, topic, "order1", [order(language, "order1") for language in CUSTOMERS])
    for language, (wa_id, *_) in CUSTOMERS.items():
        pid = f"optout-{language}-order1"
        assert Order.objects.filter(processing_id=pid).count() == 1, language
        assert OutboundMessage.objects.get(processing_id=pid).status == "SKIPPED_OPTED_OUT"
        assert len(api.sent_to(wa_id)) == 1, f"{language}: nothing after the confirmation"
    assert not ReviewFlag.objects.exists()

    # 3. START opts back in (one confirmation), and the next order gets its reply again.
    run(
        bootstrap,
        topic,
        "start",
        [
            message(language, "start", keywords[2], intent="UNKNOWN", confidence=0.4)
            for language, keywords in CUSTOMERS.items()
        ],
    )
    run(bootstrap, topic, "order2", [order(language, "order2") for language in CUSTOMERS])
    for language, (wa_id, _, _, stopped, started) in CUSTOMERS.items():
        bodies = [text["text"]["body"] for text in api.sent_to(wa_id)]
        assert len(bodies) == 3, f"{language}: {bodies}"
        assert bodies[0].startswith(stopped) and bodies[1].startswith(started), language
        assert OutboundMessage.objects.get(processing_id=f"optout-{language}-order2").body == bodies[2]
        lead = Lead.objects.get(wa_id=wa_id)
        assert lead.opted_out_at is None
        assert list(
            LeadActivity.objects.filter(lead=lead, kind__in=["opted_out", "opted_in"]).values_list("kind", flat=True)
        ) == ["opted_out", "opted_in"]
        assert Order.objects.filter(lead=lead).count() == 2
    assert not DeadLetter.objects.exists()
