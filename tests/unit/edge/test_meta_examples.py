"""Meta's documented example of every message type, status and field we read, posted signed
as Meta posts it (tests/support/meta_reference.py names the page of each): each is answered
200 and nothing is refused; each message is stored with its wamid, type and customer (or
kept UNREADABLE with its path and a reason); each change is kept with its field; statuses
are recorded; and the fields the product uses are applied where it keeps them."""

from __future__ import annotations

import pytest

from leads.models import CustomerIds, Lead
from tests.support import meta
from tests.support import meta_reference as ref
from tests.support.webhook import post_signed as post
from whatsapp.models import AccountNotice, DeliveryStatus, InboundMessage, MessageTemplate, WebhookChange

pytestmark = pytest.mark.django_db
PATH = "entry[0].changes[0].value.messages[0]"
MEDIA = ("image", "video", "audio", "document", "sticker")


@pytest.fixture
def shop(business, webhook_secrets):
    business.phone_number_id = meta.PHONE_NUMBER_ID
    business.waba_id = meta.WABA_ID
    business.save()
    return business


def known_customer(shop, **ids: str) -> Lead:
    """A lead the customer already has, for the notices that change or mark it."""
    return Lead.objects.identify(shop, CustomerIds(**ids)).lead


@pytest.mark.parametrize("example", ref.MESSAGE_EXAMPLES, ids=lambda e: e.name)
def test_each_documented_message_is_answered_200_and_stored_or_kept_unreadable(client, shop, example):
    if example.changed_to is not None:
        before = known_customer(shop, wa_id=ref.CUSTOMER, user_id=ref.BSUID)
    sent = ref.message(example)
    assert post(client, ref.delivery(("messages", ref.messages_value(example, sent)))) == 200

    row = InboundMessage.objects.get(wamid=sent["id"])
    assert (row.state, row.json_path) == (example.state, PATH), row.last_error
    assert WebhookChange.objects.get(field="messages").state == "APPLIED"
    if example.state == ref.UNREADABLE:
        assert row.last_error, "kept with the reason it could not be read"
        return
    assert (row.type, row.text, row.business) == (example.stored_type, example.stored_text, shop)
    stored = ref.Customer(row.wa_id, row.user_id, row.username)
    assert stored == example.customer
    if example.stored_type in MEDIA:
        media = example.body[example.stored_type]
        assert (row.media_id, row.media_mime_type) == (media["id"], media["mime_type"])
    if example.changed_to is not None:
        after = Lead.objects.get(pk=before.pk)
        assert ref.Customer(after.wa_id, after.user_id) == example.changed_to
        assert row.lead_id == before.lead_id, "applied to the customer's lead, not published"
        return
    assert row.processing_id and row.lead_id, "on its way to the AI service, on its customer's lead"
    lead = Lead.objects.get(lead_id=row.lead_id)
    assert (lead.wa_id, lead.user_id) == (row.wa_id, row.user_id)


def test_every_documented_message_in_one_delivery_is_each_accounted_for(client, shop):
    """One delivery carrying every example (a change per example, as each has its own
    contacts card): nothing is dropped, and the unreadable one costs nobody else."""
    known_customer(shop, wa_id=ref.CUSTOMER, user_id=ref.BSUID)
    sent = [(example, ref.message(example)) for example in ref.MESSAGE_EXAMPLES]
    delivery = ref.delivery(*(("messages", ref.messages_value(example, m)) for example, m in sent))
    assert post(client, delivery) == 200

    rows = {row.wamid: row for row in InboundMessage.objects.all()}
    assert {wamid: row.state for wamid, row in rows.items()} == {m["id"]: example.state for example, m in sent}
    for n, (example, m) in enumerate(sent):
        row = rows[m["id"]]
        assert row.json_path == f"entry[0].changes[{n}].value.messages[0]"
        assert row.type == example.stored_type, example.name
    assert list(WebhookChange.objects.values_list("field", flat=True)) == ["messages"] * len(sent)


@pytest.mark.parametrize("example", ref.STATUS_EXAMPLES, ids=lambda e: e.name)
def test_each_documented_status_is_answered_200_and_recorded_with_the_recipients_ids(client, shop, example):
    sent = ref.status(example)
    assert post(client, ref.delivery(("messages", ref.statuses_value(example, sent)))) == 200

    row = DeliveryStatus.objects.get(wamid=sent["id"])
    assert (row.status, row.phone_number_id) == (sent["status"], meta.PHONE_NUMBER_ID)
    assert (row.recipient_id, row.recipient_user_id) == (sent["recipient_id"], sent.get("recipient_user_id", ""))
    assert row.occurred_at is not None and int(row.occurred_at.timestamp()) == int(sent["timestamp"])
    errors = sent.get("errors", [{}])
    assert (row.error_code, row.error_title) == (errors[0].get("code"), errors[0].get("title", ""))
    assert WebhookChange.objects.get().field == "messages"
    assert not InboundMessage.objects.exists(), "a status is not a message"


@pytest.mark.parametrize("example", ref.field_examples(), ids=lambda e: e.name)
def test_each_documented_field_is_answered_200_kept_with_its_field_and_applied(client, shop, example):
    value = example.value
    if example.field == "user_id_update":
        lead = known_customer(shop, wa_id=ref.CUSTOMER, user_id=ref.BSUID)
    if example.field == "user_preferences":
        lead = known_customer(shop, wa_id=ref.CUSTOMER)
        Lead.objects.filter(pk=lead.pk).update(marketing_stopped_at="2026-01-01T00:00:00Z")
    assert post(client, ref.delivery((example.field, value))) == 200

    change = WebhookChange.objects.get()
    assert (change.field, change.state, change.waba_id) == (example.field, "APPLIED", meta.WABA_ID), change.reason
    if example.field in (
        "message_template_status_update",
        "message_template_quality_update",
        "template_category_update",
    ):
        # Meta's examples write the language "en-US"; it is kept as the send takes it, "en_US".
        template = MessageTemplate.objects.get(
            waba_id=meta.WABA_ID,
            name=value["message_template_name"],
            language=value["message_template_language"].replace("-", "_"),
        )
        assert template.template_id == str(value["message_template_id"])
        applied = {
            "message_template_status_update": (template.status, value.get("event")),
            "message_template_quality_update": (template.quality, value.get("new_quality_score")),
            "template_category_update": (template.category, value.get("new_category")),
        }
        got, wanted = applied[example.field]
        assert got == wanted
    elif example.field == "user_preferences":
        choice = value["user_preferences"][0]["value"]
        stopped = Lead.objects.get(pk=lead.pk).marketing_stopped_at
        assert (stopped is not None) == (choice == "stop")
        if choice == "stop":
            assert int(stopped.timestamp()) == value["user_preferences"][0]["timestamp"]
    elif example.field == "user_id_update":
        assert Lead.objects.get(pk=lead.pk).user_id == value["user_id_update"][0]["user_id"]["current"]
    else:
        notice = AccountNotice.objects.get()
        alert = value.get("alert_info", value)
        assert (notice.business, notice.field, notice.severity) == (shop, example.field, example.severity)
        assert notice.event == alert.get("event", alert.get("alert_type", ""))
        assert notice.detail == value
        limit = value.get("max_daily_conversations_per_business")
        if example.field == "phone_number_quality_update" and limit:
            assert str(limit) in notice.summary, "the operator reads the new limit"
