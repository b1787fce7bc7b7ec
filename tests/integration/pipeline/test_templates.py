"""Replies once the customer's 24-hour window has closed, through the real loop (Kafka, ingest, a
Celery worker) to the stand-in Cloud API (devtools.standin): the business's approved template
goes instead of the text, with the right name, language and parameters; without one, or with
the template PAUSED by Meta's status webhook (POSTed to the real webhook view), the reply is
skipped and the lead flagged; a 132001 answer dead-letters the message as template_error, and
requeueing it once the template is fixed sends the template exactly once.

The window is closed the way it closes in life: the customer's message was received more than
24 hours before now (Meta's timestamp, which the lead's last_inbound_at comes from), as a
message that sat upstream overnight arrives."""

from __future__ import annotations

import pytest

from devtools.standin import StandInCloudApi
from dlq.models import DeadLetter
from dlq.requeue import requeue
from leads.models import Lead, Order, ReviewFlag
from tests.support import kafka, meta
from tests.support.events import encode, event, now_iso
from tests.support.processes import wait_until
from tests.support.webhook import post_signed
from whatsapp.models import MessageTemplate, OutboundMessage, ProcessedMessage, ReplyTemplate
from whatsapp.models.templates import ReplyKind

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TOKEN = "EAAG-template-integration-token"
LOAVES = {"products": [{"sku": "SD-01", "name": "sourdough loaf", "quantity": 2}]}
# Received a day and an hour ago: the customer-service window closed an hour ago.
CLOSED_WINDOW_MINUTES = 25 * 60


@pytest.fixture
def stand_in():
    api = StandInCloudApi().start()
    yield api
    api.stop()


@pytest.fixture
def shop(business, webhook_secrets, stand_in, bootstrap, topic, start_ingest, start_worker):
    """The bakery on Meta's test number and account, its order confirmations mapped to a
    template, a worker and ingest sending to the stand-in."""
    business.phone_number_id = meta.PHONE_NUMBER_ID
    business.waba_id = meta.WABA_ID
    business.save()
    ReplyTemplate.objects.create(
        business=business,
        kind=ReplyKind.ORDER_CONFIRMED,
        template_name="order_confirmed",
        body_parameters=["customer_name", "order_reference", "products", "total"],
    )
    start_worker(env={"WHATSAPP_GRAPH_BASE_URL": stand_in.url, "WHATSAPP_ACCESS_TOKEN": TOKEN})
    start_ingest(topic)
    return business


def template_status(client, name: str, language: str, status: str) -> None:
    """Meta's message_template_status_update, signed and POSTed to the webhook."""
    delivery = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": meta.WABA_ID,
                "time": int(meta.now_ts()),
                "changes": [
                    {
                        "field": "message_template_status_update",
                        "value": {
                            "event": status,
                            "message_template_id": 806312974732579,
                            "message_template_name": name,
                            "message_template_language": language,
                            "reason": "NONE" if status == "APPROVED" else "LOW_QUALITY",
                        },
                    }
                ],
            }
        ],
    }
    assert post_signed(client, delivery) == 200


def send_late(bootstrap, topic, pid: str, customer: str, name: str, intent: str = "ORDER_REQUEST", **extra) -> None:
    """One customer's message, received long enough ago that the window has closed."""
    body = event(
        pid,
        lead_id=f"lead-{pid}",
        message_id=f"wamid.{pid}",
        customer={"wa_id": customer, "name": name},
        message={"text": "2 sourdough loaves please", "received_at": now_iso(minutes_ago=CLOSED_WINDOW_MINUTES)},
        intent=intent,
        **extra,
    )
    kafka.produce(bootstrap, topic, [(body["lead_id"].encode(), encode(body))])


def settle(pid: str, status: str = "PROCESSED", timeout: float = 90) -> ProcessedMessage:
    wait_until(
        lambda: ProcessedMessage.objects.filter(processing_id=pid, status=status).exists(),
        timeout=timeout,
        message=f"{pid} to be {status}",
    )
    return ProcessedMessage.objects.get(processing_id=pid)


def templates_to(stand_in: StandInCloudApi, customer: str) -> list:
    return [sent for sent in stand_in.templates() if sent.to == customer]


def window_flag(pid: str) -> ReviewFlag:
    flag = ReviewFlag.objects.get(processing_id=pid, reason="window_closed")
    assert Lead.objects.get(pk=flag.lead_id).needs_review
    return flag


def test_window_closed_sends_the_approved_template_skips_without_one_and_never_a_paused_one(
    shop, client, stand_in, bootstrap, topic
):
    template_status(client, "order_confirmed", "en_US", "APPROVED")
    assert MessageTemplate.objects.get(waba_id=meta.WABA_ID, name="order_confirmed").sendable

    # An order outside the window: the approved template, filled from the order and the lead.
    send_late(bootstrap, topic, "tmpl-order", "15550100011", "Ana", entities=LOAVES)
    settle("tmpl-order")
    (sent,) = templates_to(stand_in, "15550100011")
    reference = Order.objects.get(processing_id="tmpl-order").reference
    assert reference and reference.startswith("ORD-")
    assert (sent.name, sent.language) == ("order_confirmed", "en_US")
    assert sent.parameters == ["Ana", reference, "2 x sourdough loaf", "13.00 USD"]
    assert sent.processing_id == "tmpl-order"
    out = OutboundMessage.objects.get(processing_id="tmpl-order")
    assert (out.status, out.wamid, out.template_name, out.template_language) == (
        "SENT",
        sent.wamid,
        "order_confirmed",
        "en_US",
    )
    assert "Total: 13.00 USD" in out.body  # the text the template stands for, kept for the conversation
    assert not ReviewFlag.objects.filter(processing_id="tmpl-order").exists()
    assert [r.to for r in stand_in.sent()] == []  # no free-form text outside the window
    # Its statuses apply as to any reply: delivered, then read, by the template message's wamid.
    assert post_signed(client, meta.status_delivery(meta.status(sent.wamid, "delivered", recipient=sent.to))) == 200
    assert post_signed(client, meta.status_delivery(meta.status(sent.wamid, "read", recipient=sent.to))) == 200
    wait_until(
        lambda: OutboundMessage.objects.filter(pk=out.pk, delivered_at__isnull=False, read_at__isnull=False).exists(),
        timeout=60,
        message="the template's delivered and read statuses applied",
    )

    # A price question: the bakery has no template for that kind, so skipped and flagged as before.
    send_late(bootstrap, topic, "tmpl-price", "15550100012", "Bruno", intent="PRICING_INQUIRY", entities=LOAVES)
    settle("tmpl-price")
    assert OutboundMessage.objects.get(processing_id="tmpl-price").status == "SKIPPED_WINDOW_CLOSED"
    assert window_flag("tmpl-price").detail["template"] == "no active reply template for pricing"
    assert templates_to(stand_in, "15550100012") == []

    # Meta pauses the template (its status webhook): the next order's confirmation is not sent.
    template_status(client, "order_confirmed", "en_US", "PAUSED")
    send_late(bootstrap, topic, "tmpl-paused", "15550100013", "Carla", entities=LOAVES)
    settle("tmpl-paused")
    assert Order.objects.filter(processing_id="tmpl-paused").count() == 1  # the order itself stands
    assert OutboundMessage.objects.get(processing_id="tmpl-paused").status == "SKIPPED_WINDOW_CLOSED"
    assert "not approved" in window_flag("tmpl-paused").detail["template"]
    assert templates_to(stand_in, "15550100013") == []
    assert len(stand_in.templates()) == 1 and stand_in.refused() == []


def test_a_132001_answer_dead_letters_as_template_error_and_a_requeue_after_the_fix_sends_it_once(
    shop, client, stand_in, bootstrap, topic
):
    # The reply template names a template whose English translation Meta does not have,
    # though a stale sync left it APPROVED here: Meta answers 132001.
    ReplyTemplate.objects.filter(business=shop).update(template_name="order_confirmation")
    template_status(client, "order_confirmation", "en_US", "APPROVED")
    template_status(client, "order_confirmed", "en_US", "APPROVED")
    stand_in.refuse_template("order_confirmation", 132001)

    send_late(bootstrap, topic, "tmpl-missing", "15550100021", "Dora", entities=LOAVES)
    settle("tmpl-missing", status="FAILED")
    entry = DeadLetter.objects.get(processing_id="tmpl-missing")
    assert (entry.stage, entry.reason) == ("reply", "template_error")
    assert "132001" in entry.error_message and "does not exist in the translation" in entry.error_message
    assert TOKEN not in entry.error_message + entry.traceback
    out = OutboundMessage.objects.get(processing_id="tmpl-missing")
    assert (out.status, out.error_code, out.template_name) == ("FAILED", 132001, "order_confirmation")
    assert Order.objects.get(processing_id="tmpl-missing").status == "CREATED"  # the actions stand
    assert [(r.name, r.code) for r in stand_in.refused()] == [("order_confirmation", 132001)]  # not retried
    assert stand_in.templates() == []

    # The operator points the order confirmation at the right template, then requeues.
    ReplyTemplate.objects.filter(business=shop).update(template_name="order_confirmed")
    requeue(entry.pk, by="ops")
    settle("tmpl-missing")
    (sent,) = stand_in.templates()
    assert (sent.to, sent.name, sent.language) == ("15550100021", "order_confirmed", "en_US")
    assert (
        sent.parameters[0] == "Dora" and sent.parameters[1] == Order.objects.get(processing_id="tmpl-missing").reference
    )
    out.refresh_from_db()
    assert (out.status, out.wamid, out.template_name) == ("SENT", sent.wamid, "order_confirmed")
    assert Order.objects.filter(processing_id="tmpl-missing").count() == 1
    assert len(stand_in.refused()) == 1 and len(stand_in.templates()) == 1  # sent once, nothing more
