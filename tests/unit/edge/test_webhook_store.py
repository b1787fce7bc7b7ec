"""Storing a verified delivery, the request built from a stored message, and the outbox's
backlog gauges: in this process, on the real Postgres."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from leads.models import Business, Lead
from tests.support import meta
from whatsapp.contracts.request import processing_id_for, validate_request
from whatsapp.contracts.result import ContractError
from whatsapp.edge.outbox import request_payload
from whatsapp.edge.webhook.payload import parse_delivery
from whatsapp.edge.webhook.store import store_delivery
from whatsapp.models import InboundMessage, WebhookDelivery
from whatsapp.ops.collectors import ScrapeTimeCollector

pytestmark = pytest.mark.django_db


def keep(delivery: dict) -> None:
    body = meta.encode(delivery)
    store_delivery(body, parse_delivery(body))


@pytest.fixture
def shop():
    return Business.objects.create(
        business_id="biz-wa", tenant_id="tenant-wa", display_name="Shop", phone_number_id=meta.PHONE_NUMBER_ID
    )


def test_a_message_is_stored_with_its_derived_ids_and_a_redelivery_adds_nothing(shop):
    message = meta.text_message("hello")
    delivery = meta.message_delivery(message, message)  # the same message twice in one delivery, too
    keep(delivery)
    # Meta's redelivery of the message in other bytes (the bytes themselves again are a
    # replay, stored once: test_webhook_replays.py).
    keep(meta.message_delivery(message, message, name="Ana S."))
    row = InboundMessage.objects.get()
    assert row.business == shop and row.state == InboundMessage.State.PENDING
    assert row.processing_id == processing_id_for(message["id"])
    lead = Lead.objects.get(business=shop, wa_id=meta.CUSTOMER)
    assert row.lead_id == lead.lead_id and lead.lead_id.startswith("ld.") and meta.CUSTOMER not in lead.lead_id
    assert Lead.objects.count() == 1, "a redelivery joins the same lead"
    first, second = WebhookDelivery.objects.order_by("id")
    assert (first.messages, first.new_messages, first.duplicates) == (2, 1, 1)
    assert (second.messages, second.new_messages, second.duplicates) == (2, 0, 2)
    assert row.delivery == first


def test_a_number_routes_to_its_one_active_business(shop):
    """One active business per number is the database's rule (leads' constraint), so an
    inactive business keeping the number does not count: messages go to the active one,
    and with none active they are UNROUTABLE."""
    Business.objects.create(
        business_id="biz-other",
        tenant_id="t2",
        display_name="Other",
        phone_number_id=meta.PHONE_NUMBER_ID,
        is_active=False,
    )
    keep(meta.message_delivery(meta.text_message("whose am I?")))
    assert InboundMessage.objects.get().business == shop
    Business.objects.filter(pk=shop.pk).update(is_active=False)
    keep(meta.message_delivery(meta.text_message("and me?")))
    row = InboundMessage.objects.exclude(business=shop).get()
    assert row.business is None and row.state == InboundMessage.State.UNROUTABLE


def test_the_request_of_a_stored_message_is_a_valid_v1_request(shop):
    image = meta.image_message(caption="¿tienen este? 😊")
    keep(meta.message_delivery(image, name="José"))
    payload = request_payload(InboundMessage.objects.select_related("business").get())
    assert validate_request(payload)  # the contract the classifier checks
    sent = datetime.fromisoformat(payload["message"].pop("received_at"))
    assert sent == datetime.fromtimestamp(int(image["timestamp"]), UTC), "Meta's timestamp"
    assert payload == {
        "schema_version": 1,
        "processing_id": processing_id_for(image["id"]),
        "business_id": "biz-wa",
        "tenant_id": "tenant-wa",
        "lead_id": Lead.objects.get(wa_id=meta.CUSTOMER).lead_id,
        "customer": {"wa_id": meta.CUSTOMER, "name": "José"},
        "message": {
            "id": image["id"],
            "type": "image",
            "text": "¿tienen este? 😊",
            "media": {"id": "1479537139650973", "mime_type": "image/jpeg", "caption": "¿tienen este? 😊"},
        },
    }


def test_an_unroutable_or_invalid_message_makes_no_request(shop):
    keep(meta.message_delivery(meta.text_message("hi"), phone_number_id="1234"))
    with pytest.raises(ContractError, match="not routed to a business"):
        request_payload(InboundMessage.objects.get())
    keep(meta.message_delivery(meta.text_message("hi", sender="not-a-number")))
    unreadable = InboundMessage.objects.get(state=InboundMessage.State.UNREADABLE)
    assert unreadable.json_path == "entry[0].changes[0].value.messages[0]"
    assert unreadable.last_error.endswith("from is neither a phone number nor a business-scoped user id")
    assert not InboundMessage.objects.filter(business=shop).exists(), "nothing to publish"


def test_the_backlog_gauges_count_unpublished_rows_and_the_oldest_ones_age(shop):
    def gauges() -> dict[str, float]:
        return {family.name: family.samples[0].value for family in ScrapeTimeCollector.outbox()}

    assert gauges() == {"whatsapp_outbox_backlog": 0, "whatsapp_outbox_oldest_age_seconds": 0}
    keep(meta.message_delivery(meta.text_message("a"), meta.text_message("b"), meta.text_message("c")))
    keep(meta.message_delivery(meta.text_message("elsewhere"), phone_number_id="1234"))  # not in the backlog
    InboundMessage.objects.filter(text="a").update(stored_at=timezone.now() - timedelta(minutes=5))
    InboundMessage.objects.filter(text="b").update(state=InboundMessage.State.PUBLISHED, published_at=timezone.now())
    found = gauges()
    assert found["whatsapp_outbox_backlog"] == 2
    assert 299 <= found["whatsapp_outbox_oldest_age_seconds"] < 330
