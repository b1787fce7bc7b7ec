"""Meta's documented example of every message type, status and field we read, posted signed
as Meta posts it (tests/support/meta_reference.py says where each comes from): each is
answered 200, each message is stored (or kept UNREADABLE with its path), each change is kept
with its field, and none is refused."""

from __future__ import annotations

import pytest

from leads.models import Lead
from tests.support import meta
from tests.support import meta_reference as ref
from whatsapp.models import AccountNotice, DeliveryStatus, InboundMessage, MessageTemplate, WebhookChange

pytestmark = pytest.mark.django_db
URL = "/webhooks/whatsapp/"
PATH = "entry[0].changes[0].value.messages[0]"


def post(client, delivery: dict) -> int:
    body = meta.encode(delivery)
    return client.post(
        URL, data=body, content_type="application/json", HTTP_X_HUB_SIGNATURE_256=meta.sign(body)
    ).status_code


@pytest.fixture
def shop(business, webhook_secrets):
    business.phone_number_id = meta.PHONE_NUMBER_ID
    business.waba_id = meta.WABA_ID
    business.save()
    return business


@pytest.mark.parametrize("example", ref.MESSAGE_EXAMPLES, ids=lambda e: e.name)
def test_each_documented_message_is_answered_200_and_stored_or_kept_unreadable(client, shop, example):
    sent = ref.message(example)
    assert post(client, ref.delivery(("messages", ref.messages_value(example, sent)))) == 200

    row = InboundMessage.objects.get(wamid=sent["id"])
    assert row.state == example.state, row.last_error
    assert row.json_path == PATH
    if example.state == ref.UNREADABLE:
        assert row.last_error, "kept with the reason it could not be read"
        return
    assert row.type == example.stored_type and row.business == shop
    if example.stored_text:
        assert row.text == example.stored_text
    contact = example.contact
    assert (row.wa_id, row.user_id) == (contact.get("wa_id", ""), contact.get("user_id", ""))
    assert row.username == contact["profile"].get("username", "")
    if example.state == ref.PUBLISHED:
        assert row.processing_id and row.lead_id, "on its way to the AI service, on its customer's lead"
        lead = Lead.objects.get(lead_id=row.lead_id)
        assert (lead.wa_id, lead.user_id) == (row.wa_id, row.user_id)
    assert WebhookChange.objects.get(field="messages").state == "APPLIED"


def test_every_documented_message_in_one_delivery_is_each_accounted_for(client, shop):
    """One delivery carrying every example (one change per example: each names its own
    customer card): nothing is dropped and the odd one costs nobody else."""
    sent = [(example, ref.message(example)) for example in ref.MESSAGE_EXAMPLES]
    delivery = ref.delivery(*(("messages", ref.messages_value(example, m)) for example, m in sent))
    assert post(client, delivery) == 200
    states = dict(InboundMessage.objects.values_list("wamid", "state"))
    assert states == {m["id"]: example.state for example, m in sent}
    unreadable = InboundMessage.objects.filter(state=ref.UNREADABLE)
    assert {row.json_path for row in unreadable} == {
        f"entry[0].changes[{n}].value.messages[0]" for n, (e, _) in enumerate(sent) if e.state == ref.UNREADABLE
    }
    assert WebhookChange.objects.filter(field="messages").count() == len(sent)


@pytest.mark.parametrize("name", ["sent", "delivered", "read", "failed"])
def test_each_documented_status_is_answered_200_and_recorded_with_the_recipients_ids(client, shop, name):
    wamid = ref.fresh_wamid()
    assert post(client, ref.delivery(("messages", ref.statuses_value(ref.status(wamid, name))))) == 200
    row = DeliveryStatus.objects.get(wamid=wamid)
    assert (row.status, row.recipient_id, row.recipient_user_id) == (name, ref.CUSTOMER, ref.BSUID)
    assert row.phone_number_id == meta.PHONE_NUMBER_ID and row.occurred_at is not None
    if name == "failed":
        assert (row.error_code, row.error_title) == (131047, "Re-engagement message")


@pytest.mark.parametrize("example", ref.field_examples(), ids=lambda e: e.field)
def test_each_documented_field_is_answered_200_kept_with_its_field_and_applied(client, shop, example):
    if example.field == "user_id_update":
        Lead.objects.identify(shop, ref_customer(wa_id=ref.CUSTOMER, user_id=ref.BSUID))
    assert post(client, ref.delivery((example.field, example.value))) == 200
    change = WebhookChange.objects.get()
    assert (change.field, change.state) == (example.field, example.state), change.reason

    if example.field.startswith(("message_template", "template_")):
        template = MessageTemplate.objects.get(name="order_confirmation", language="en_US")
        assert (template.status, template.quality, template.category) in {
            ("APPROVED", "", ""),
            ("", "YELLOW", ""),
            ("", "", "MARKETING"),
        }
    elif example.field == "user_preferences":
        assert Lead.objects.get(business=shop, wa_id=ref.CUSTOMER).marketing_stopped_at is not None
    elif example.field == "user_id_update":
        assert Lead.objects.get(business=shop, wa_id=ref.CUSTOMER).user_id == ref.NEW_BSUID
    else:
        notice = AccountNotice.objects.get()
        assert (notice.business, notice.field) == (shop, example.field)
        assert (notice.event, notice.severity) == SEVERITY[example.field], notice.summary


# What the operator is shown first: a restriction and a lowered messaging limit above the rest.
SEVERITY = {
    "account_update": ("ACCOUNT_RESTRICTION", "critical"),
    "account_alerts": ("INCREASED_CAPABILITIES_ELIGIBILITY_NEED_MORE_INFO", "warning"),
    "phone_number_quality_update": ("DOWNGRADE", "critical"),
    "business_capability_update": ("", "info"),
}


def ref_customer(**ids: str):
    from leads.models import CustomerIds

    return CustomerIds(**ids)
