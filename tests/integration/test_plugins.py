"""A deployment's own intent handler and action, added through the WHATSAPP_PLUGINS setting
(tests/support/plugin_example.py) with no edit to the whatsapp package, carry a message end
to end: Kafka, the ingest process, a real Celery worker given the setting, Postgres."""

from __future__ import annotations

import pytest

from leads.models import Lead, LeadActivity
from tests.conftest import Pipeline
from tests.support.events import event
from tests.support.processes import wait_until
from whatsapp.models import DuplicateDelivery, ProcessedMessage, SagaStep

pytestmark = pytest.mark.django_db(transaction=True)

MEMBER = {"products": [{"sku": "SD-01", "name": "sourdough loaf"}], "loyalty_card": "LC-0042"}


# Three customers, so three leads: a stamp lands on its own customer's card alone.
MEMBER_EN = {"wa_id": "15550100001"}


@pytest.fixture
def plugged_pipeline(bootstrap, topic, start_ingest, start_worker, business) -> Pipeline:
    worker = start_worker(env={"WHATSAPP_PLUGINS": "tests.support.plugin_example"})
    return Pipeline(bootstrap, topic, start_ingest(topic), [worker])


def test_plugin_handler_and_action_carry_a_message_end_to_end(plugged_pipeline):
    plugged_pipeline.send(
        [
            event("member-en", intent="PRICING_INQUIRY", lead_id="lead-member", customer=MEMBER_EN, entities=MEMBER),
            event(
                "member-es",
                intent="PRICING_INQUIRY",
                lead_id="lead-socio",
                customer={"wa_id": "15550100002"},
                entities={**MEMBER, "language": "es"},
            ),
            # Not a member: the built-in pricing handler still answers.
            event(
                "plain",
                intent="PRICING_INQUIRY",
                lead_id="lead-plain",
                customer={"wa_id": "15550100003"},
                entities={"products": MEMBER["products"]},
            ),
        ]
    )
    plugged_pipeline.wait_settled(3)

    member = ProcessedMessage.objects.get(processing_id="member-en")
    assert (member.status, member.handler) == ("PROCESSED", "loyalty"), member.last_error
    assert member.reply_text == "Thanks for being a member! Acme Bakery has added a stamp to your loyalty card."
    step = SagaStep.objects.get(message=member)
    assert (step.action, step.status, step.attempts) == ("STAMP_LOYALTY_CARD", "SUCCEEDED", 1)
    stamp = LeadActivity.objects.get(lead__aliases__alias="lead-member", kind="loyalty_stamp")
    assert step.result == {"activity_id": stamp.pk}
    assert (stamp.processing_id, stamp.detail["stamps"]) == ("member-en", 1)

    socio = ProcessedMessage.objects.get(processing_id="member-es")
    assert (socio.status, socio.handler) == ("PROCESSED", "loyalty")
    assert socio.reply_text == "¡Gracias por ser socio! Acme Bakery ha añadido un sello a tu tarjeta de fidelidad."

    plain = ProcessedMessage.objects.get(processing_id="plain")
    assert (plain.status, plain.handler) == ("PROCESSED", "pricing")
    assert "sourdough loaf: 6.50 USD" in plain.reply_text
    plain_steps = SagaStep.objects.filter(message=plain).values_list("action", "status")
    assert list(plain_steps) == [("NOTIFY_SALES", "SUCCEEDED")]
    assert not LeadActivity.objects.filter(lead__aliases__alias="lead-plain", kind="loyalty_stamp").exists()

    # The same record delivered again is a duplicate: still one stamp.
    plugged_pipeline.send(
        [event("member-en", intent="PRICING_INQUIRY", lead_id="lead-member", customer=MEMBER_EN, entities=MEMBER)]
    )
    wait_until(
        lambda: DuplicateDelivery.objects.filter(processing_id="member-en").exists(),
        timeout=60,
        message="the repeat to be recorded as a duplicate",
    )
    assert LeadActivity.objects.filter(kind="loyalty_stamp").count() == 2  # member-en and member-es, once each
    assert Lead.objects.get(aliases__alias="lead-member").activities.filter(kind="loyalty_stamp").count() == 1
    assert SagaStep.objects.filter(action="STAMP_LOYALTY_CARD").count() == 2
