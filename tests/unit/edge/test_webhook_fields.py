"""Every webhook field is kept with its field, and the ones the product needs are applied:
template status, quality and category; a customer's marketing stop and resume; account
notices, which the overview shows first until someone acknowledges them."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from leads.models import Lead, LeadActivity
from tests.support import meta
from tests.support.webhook import post_signed as post
from whatsapp.models import AccountNotice, InboundMessage, MessageTemplate, WebhookChange

pytestmark = pytest.mark.django_db


def change(field: str, value: dict) -> dict:
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": meta.WABA_ID, "changes": [{"field": field, "value": value}]}],
    }


@pytest.fixture
def shop(business, webhook_secrets):
    business.phone_number_id = meta.PHONE_NUMBER_ID
    business.waba_id = meta.WABA_ID
    business.save()
    return business


def test_template_status_quality_and_category_are_kept_per_name_and_language(client, shop):
    ids = {
        "message_template_id": 806312974732579,
        "message_template_name": "order_update",
        "message_template_language": "en_US",
    }
    assert post(client, change("message_template_status_update", {**ids, "event": "APPROVED", "reason": "NONE"})) == 200
    assert (
        post(
            client,
            change(
                "message_template_quality_update",
                {**ids, "previous_quality_score": "GREEN", "new_quality_score": "YELLOW"},
            ),
        )
        == 200
    )
    assert (
        post(
            client,
            change("template_category_update", {**ids, "previous_category": "UTILITY", "new_category": "MARKETING"}),
        )
        == 200
    )
    template = MessageTemplate.objects.get()
    assert (template.name, template.language, template.status, template.quality, template.category) == (
        "order_update",
        "en_US",
        "APPROVED",
        "YELLOW",
        "MARKETING",
    )
    assert template.sendable and template.template_id == "806312974732579"
    assert (
        post(client, change("message_template_status_update", {**ids, "event": "PAUSED", "reason": "LOW_QUALITY"}))
        == 200
    )
    template.refresh_from_db()
    assert (template.status, template.reason, template.sendable) == ("PAUSED", "LOW_QUALITY", False)
    assert set(WebhookChange.objects.values_list("state", flat=True)) == {WebhookChange.State.APPLIED}


def test_a_reinstated_template_is_sendable_again_and_a_lock_changes_nothing(client, shop):
    ids = {
        "message_template_id": 806312974732579,
        "message_template_name": "order_update",
        "message_template_language": "en_US",
    }

    def status() -> str:
        return MessageTemplate.objects.get(name="order_update").status

    assert post(client, change("message_template_status_update", {**ids, "event": "PAUSED", "reason": "NONE"})) == 200
    assert status() == "PAUSED"
    # Meta unpauses it: REINSTATED, which its listing shows as APPROVED.
    assert (
        post(client, change("message_template_status_update", {**ids, "event": "REINSTATED", "reason": "NONE"})) == 200
    )
    assert status() == "APPROVED" and MessageTemplate.objects.get().sendable
    # The language written as in Meta's webhook reference ("en-US") is the same template.
    hyphen = {**ids, "message_template_language": "en-US"}
    assert post(client, change("message_template_status_update", {**hyphen, "event": "PAUSED"})) == 200
    assert status() == "PAUSED"
    assert post(client, change("message_template_status_update", {**hyphen, "event": "REINSTATED"})) == 200
    assert status() == "APPROVED"
    # Locked for editing: still approved. An event missing: unreadable, the status kept.
    assert post(client, change("message_template_status_update", {**ids, "event": "LOCKED"})) == 200
    assert post(client, change("message_template_status_update", {**ids, "reason": "NONE"})) == 200
    assert status() == "APPROVED"
    states = list(WebhookChange.objects.order_by("pk").values_list("state", flat=True))
    assert states == ["APPLIED"] * 5 + ["UNREADABLE"]


def test_a_marketing_stop_and_resume_are_recorded_on_the_customers_lead(client, shop):
    def preference(value: str) -> dict:
        return change(
            "user_preferences",
            {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": meta.DISPLAY_NUMBER, "phone_number_id": meta.PHONE_NUMBER_ID},
                "contacts": [
                    {"profile": {"name": "Ana"}, "wa_id": meta.CUSTOMER, "user_id": "US.13491208655302741918"}
                ],
                "user_preferences": [
                    {
                        "wa_id": meta.CUSTOMER,
                        "detail": "User requested to stop marketing messages",
                        "category": "marketing_messages",
                        "value": value,
                        "timestamp": int(meta.now_ts()),
                    }
                ],
            },
        )

    assert post(client, preference("stop")) == 200
    lead = Lead.objects.get(business=shop)
    assert lead.marketing_stopped_at is not None and lead.user_id == "US.13491208655302741918"
    assert post(client, preference("resume")) == 200
    lead.refresh_from_db()
    assert lead.marketing_stopped_at is None
    kinds = list(LeadActivity.objects.filter(lead=lead).values_list("kind", flat=True))
    assert kinds == ["marketing_stopped", "marketing_resumed"]


def test_a_restricted_account_shows_first_on_the_overview_until_acknowledged(client, shop, admin_client):
    restriction = {
        "phone_number": meta.DISPLAY_NUMBER,
        "event": "ACCOUNT_RESTRICTION",
        "restriction_info": [
            {"restriction_type": "RESTRICTED_BIZ_INITIATED_MESSAGING", "expiration": int(meta.now_ts(86400))}
        ],
    }
    assert (
        post(
            client,
            change(
                "phone_number_quality_update",
                {"display_phone_number": meta.DISPLAY_NUMBER, "event": "ONBOARDING", "current_limit": "TIER_1K"},
            ),
        )
        == 200
    )
    assert post(client, change("account_update", restriction)) == 200
    data = admin_client.get("/admin/overview/data.json").json()
    first = data["account_notices"][0]
    assert (first["severity"], first["field"], first["event"], first["business"]) == (
        "critical",
        "account_update",
        "ACCOUNT_RESTRICTION",
        shop.business_id,
    )
    assert "RESTRICTED_BIZ_INITIATED_MESSAGING" in first["summary"]
    assert len(data["account_notices"]) == 2
    notice = AccountNotice.objects.get(event="ACCOUNT_RESTRICTION")
    response = admin_client.post(
        "/admin/whatsapp/accountnotice/", {"action": "acknowledge", "_selected_action": [notice.pk]}, follow=True
    )
    assert "1 notice(s) acknowledged" in response.content.decode()
    assert [n["event"] for n in admin_client.get("/admin/overview/data.json").json()["account_notices"]] == [
        "ONBOARDING"
    ]


def test_a_field_the_product_does_not_use_is_stored_and_an_odd_one_is_unreadable(client, shop):
    assert (
        post(client, change("security", {"display_phone_number": meta.DISPLAY_NUMBER, "event": "PIN_CHANGED"})) == 200
    )
    odd = {
        "object": "whatsapp_business_account",
        "entry": [{"id": meta.WABA_ID, "changes": [{"field": "account_update", "value": "not an object"}]}],
    }
    assert post(client, odd) == 200
    stored, unreadable = WebhookChange.objects.order_by("id")
    assert (stored.field, stored.state, stored.value["event"]) == (
        "security",
        WebhookChange.State.STORED,
        "PIN_CHANGED",
    )
    assert (unreadable.field, unreadable.state) == ("account_update", WebhookChange.State.UNREADABLE)
    assert unreadable.reason == "entry[0].changes[0].value must be an object, got string"


def test_route_unroutable_routes_each_message_once_its_number_is_configured(client, business, webhook_secrets, capsys):
    assert post(client, meta.message_delivery(meta.text_message("hi"), meta.text_message("there"))) == 200
    assert InboundMessage.objects.filter(state=InboundMessage.State.UNROUTABLE).count() == 2
    call_command("route_unroutable")
    assert "routed 0 message(s): none; still unroutable" in capsys.readouterr().out
    business.phone_number_id = meta.PHONE_NUMBER_ID
    business.save()
    call_command("route_unroutable")
    assert f"routed 2 message(s): 2 to {business.business_id}" in capsys.readouterr().out
    rows = list(InboundMessage.objects.all())
    lead = Lead.objects.get(business=business, wa_id=meta.CUSTOMER)
    assert {(r.state, r.business_id, r.lead_id) for r in rows} == {
        (InboundMessage.State.PENDING, business.pk, lead.lead_id)
    }
    call_command("route_unroutable")
    assert "routed 0 message(s)" in capsys.readouterr().out
