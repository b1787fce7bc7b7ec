"""The template's language and parameters (whatsapp.send.template), and the Graph error class:
choose() against real rows (language matching, empty parameters, marketing stopped), and a
paused or disabled answer from the stand-in Cloud API (devtools.standin) through send_reply."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.breakers import reset
from core.clients import cloud_api
from core.errors import is_retryable
from devtools.standin import StandInCloudApi
from leads.models import Lead, ReviewFlag
from whatsapp.models import MessageTemplate, OutboundMessage, ReplyTemplate
from whatsapp.models.templates import ReplyKind
from whatsapp.send.reply import send_reply
from whatsapp.send.template import Decision, choose, parameter_text, pick_language


def templates(*codes: str) -> list[MessageTemplate]:
    return [MessageTemplate(waba_id="1", name="order_update", language=code, status="APPROVED") for code in codes]


def test_the_customers_language_wins_then_its_primary_then_the_businesss_default():
    def chosen(wanted: str | None, default: str, *codes: str) -> str | None:
        found = pick_language(templates(*codes), wanted, default)
        return found.language if found else None

    assert chosen("pt-BR", "en", "pt_PT", "pt_BR", "en_US") == "pt_BR"
    assert chosen("pt-BR", "en", "pt", "pt_PT") == "pt"
    assert chosen("pt", "en", "pt_PT", "pt_BR") == "pt_BR"
    assert chosen("de", "es", "es_MX", "en_US") == "es_MX"
    assert chosen("de", "fr", "es_MX", "en_US") is None


def test_a_parameter_is_one_line():
    assert parameter_text("2 x bread,\n1 x\tcroissant     ") == "2 x bread, 1 x croissant"
    assert parameter_text(None) == ""


def test_template_codes_are_permanent_template_errors():
    for code in (132000, 132001, 132005, 132007, 132012, 132015, 132016):
        error = cloud_api.classify(400, {"error": {"code": code, "message": f"(#{code}) template"}})
        assert isinstance(error, cloud_api.CloudApiTemplateError) and error.dead_letter_reason == "template_error"


# choose(): what the saga sends once the window has closed, from the rows an operator keeps.

WABA_ID = "102290129340398"
PHONE_NUMBER_ID = "106540352242922"
ORDER_FIELDS = {"business": "Acme Bakery", "products": "2 x sourdough loaf", "total": "13.00 USD"}


@pytest.fixture
def shop(business):
    business.waba_id = WABA_ID
    business.phone_number_id = PHONE_NUMBER_ID
    business.default_language = "en"
    business.save()
    ReplyTemplate.objects.create(
        business=business,
        kind=ReplyKind.ORDER_CONFIRMED,
        template_name="order_confirmed",
        body_parameters=["customer_name", "products", "total"],
    )
    return business


@pytest.fixture
def ana(shop):
    # The customer last wrote two days ago: the 24-hour window is closed.
    return Lead.objects.create(
        lead_id="lead-ana",
        business=shop,
        wa_id="15550100001",
        customer_name="Ana",
        last_inbound_at=timezone.now() - timedelta(days=2),
    )


def approved(name: str, *languages: str, category: str = "UTILITY", status: str = "APPROVED") -> None:
    for language in languages:
        MessageTemplate.objects.create(waba_id=WABA_ID, name=name, language=language, status=status, category=category)


def choose_for(shop, lead, language: str | None = "en", **fields) -> Decision:
    return choose(
        business=shop,
        lead=lead,
        processing_id="proc-choose",
        saga_run=1,
        kind=ReplyKind.ORDER_CONFIRMED,
        fields={**ORDER_FIELDS, "language": language, **fields},
    )


@pytest.mark.django_db(transaction=True)
def test_choose_sends_the_customers_language_with_the_fields_in_the_templates_order(shop, ana):
    approved("order_confirmed", "en_US", "pt_BR", "es")
    decision = choose_for(shop, ana, language="pt-BR")
    assert decision.choice is not None, decision.why_not
    assert (decision.choice.name, decision.choice.language) == ("order_confirmed", "pt_BR")
    assert decision.choice.components == [
        {
            "type": "body",
            "parameters": [
                {"type": "text", "text": "Ana"},
                {"type": "text", "text": "2 x sourdough loaf"},
                {"type": "text", "text": "13.00 USD"},
            ],
        }
    ]


@pytest.mark.django_db(transaction=True)
def test_choose_falls_back_to_the_businesss_language_never_to_an_unapproved_one(shop, ana):
    approved("order_confirmed", "en_US")
    approved("order_confirmed", "es", status="PAUSED")
    approved("order_confirmed", "fr", status="REJECTED")
    # Spanish is paused: the business's own language (en) goes instead.
    chosen = choose_for(shop, ana, language="es").choice
    assert chosen is not None and chosen.language == "en_US"
    # Neither the customer's nor the business's language approved: nothing is sent.
    shop.default_language = "fr"
    refused = choose_for(shop, ana, language="de")
    assert refused.choice is None
    assert refused.why_not == "template order_confirmed is not approved in the customer's language"


@pytest.mark.django_db(transaction=True)
def test_choose_named_parameters_carry_their_names(shop, ana):
    approved("order_confirmed", "en")
    ReplyTemplate.objects.filter(business=shop).update(
        parameter_format=ReplyTemplate.ParameterFormat.NAMED, body_parameters=["customer_name", "total"]
    )
    chosen = choose_for(shop, ana).choice
    assert chosen is not None
    assert chosen.components[0]["parameters"] == [
        {"type": "text", "parameter_name": "customer_name", "text": "Ana"},
        {"type": "text", "parameter_name": "total", "text": "13.00 USD"},
    ]


@pytest.mark.django_db(transaction=True)
def test_choose_refuses_a_template_with_a_parameter_left_empty(shop, ana):
    approved("order_confirmed", "en_US")
    # No total on the reply, and a customer without a name or username: Meta refuses empty parameters.
    missing = choose_for(shop, ana, total="   ")
    assert missing.choice is None and missing.why_not == "template order_confirmed: no value for total"
    Lead.objects.filter(pk=ana.pk).update(customer_name="", username="")
    ana.refresh_from_db()
    nameless = choose_for(shop, ana)
    assert nameless.choice is None and nameless.why_not == "template order_confirmed: no value for customer_name"
    # An order reference named by the template but not made by any action is missing too.
    ReplyTemplate.objects.filter(business=shop).update(body_parameters=["order_reference"])
    assert choose_for(shop, ana).why_not == "template order_confirmed: no value for order_reference"


@pytest.mark.django_db(transaction=True)
def test_choose_no_marketing_template_to_a_customer_who_stopped_marketing(shop, ana):
    approved("order_confirmed", "en_US", category="MARKETING")
    assert choose_for(shop, ana).choice is not None
    Lead.objects.filter(pk=ana.pk).update(marketing_stopped_at=timezone.now() - timedelta(hours=1))
    ana.refresh_from_db()
    stopped = choose_for(shop, ana)
    assert stopped.choice is None
    assert stopped.why_not == ("template order_confirmed is MARKETING and the customer stopped marketing messages")
    # A utility template still goes: the stop is about marketing only.
    MessageTemplate.objects.filter(name="order_confirmed").update(category="UTILITY")
    assert choose_for(shop, ana).choice is not None


@pytest.mark.django_db(transaction=True)
def test_choose_nothing_without_an_account_a_reply_template_or_a_kind(shop, ana):
    approved("order_confirmed", "en_US")
    assert choose(business=shop, lead=ana, processing_id="p", saga_run=1, kind="", fields=ORDER_FIELDS).why_not == (
        "the reply has no kind a template could stand for"
    )
    ReplyTemplate.objects.filter(business=shop).update(is_active=False)
    assert choose_for(shop, ana).why_not == "no active reply template for order_confirmed"
    shop.waba_id = ""
    assert choose_for(shop, ana).why_not == "the business has no WhatsApp Business Account id"


# 132015 / 132016: Meta says the template is paused or disabled before its webhook did.


@pytest.fixture
def stand_in(settings):
    api = StandInCloudApi().start()
    settings.WHATSAPP_GRAPH_BASE_URL = api.url
    settings.WHATSAPP_GRAPH_VERSION = "v21.0"
    settings.WHATSAPP_ACCESS_TOKEN = "EAAG-template-test"
    reset(f"whatsapp:{PHONE_NUMBER_ID}")
    yield api
    api.stop()
    reset(f"whatsapp:{PHONE_NUMBER_ID}")


def reply_late(shop, lead, run: int) -> OutboundMessage:
    return send_reply(
        processing_id="proc-paused",
        saga_run=run,
        business=shop,
        lead=lead,
        text="Thanks Ana! 2 x sourdough loaf, total 13.00 USD.",
        kind=ReplyKind.ORDER_CONFIRMED,
        fields={**ORDER_FIELDS, "language": "en"},
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("code", "status"), [(132015, "PAUSED"), (132016, "DISABLED")])
def test_a_paused_or_disabled_answer_is_a_permanent_template_error_and_marks_the_template(
    shop, ana, stand_in, code, status
):
    approved("order_confirmed", "en_US")
    stand_in.refuse_template("order_confirmed", code)
    with pytest.raises(cloud_api.CloudApiTemplateError) as refused:
        reply_late(shop, ana, run=1)
    assert refused.value.code == code and not is_retryable(refused.value)
    assert refused.value.dead_letter_reason == "template_error"
    row = OutboundMessage.objects.get(processing_id="proc-paused", saga_run=1)
    assert (row.status, row.error_code, row.template_name) == ("FAILED", code, "order_confirmed")
    stored = MessageTemplate.objects.get(waba_id=WABA_ID, name="order_confirmed", language="en_US")
    assert (stored.status, stored.sendable) == (status, False)

    # The next reply does not try it again: skipped and flagged, saying why.
    later = reply_late(shop, ana, run=2)
    assert later.status == "SKIPPED_WINDOW_CLOSED"
    assert [r.code for r in stand_in.refused()] == [code] and stand_in.templates() == []
    flag = ReviewFlag.objects.get(processing_id="proc-paused", saga_run=2)
    assert flag.reason == "window_closed" and "not approved" in flag.detail["template"]


@pytest.mark.django_db(transaction=True)
def test_no_template_goes_to_a_customer_who_opted_out(business):
    from leads.models import Lead
    from whatsapp.models import ReplyTemplate
    from whatsapp.send.template import choose

    business.waba_id = "102290129340398"
    business.save(update_fields=["waba_id"])
    ReplyTemplate.objects.create(business=business, kind="order_confirmed", template_name="order_update")
    MessageTemplate.objects.create(
        waba_id=business.waba_id, name="order_update", language="en_US", status="APPROVED", category="UTILITY"
    )
    lead = Lead.objects.create(lead_id="ld.tpl", business=business, wa_id="15550123456")

    def decision():
        return choose(business=business, lead=lead, processing_id="p", saga_run=1, kind="order_confirmed", fields={})

    assert decision().choice is not None
    lead.opt_out(source="keyword")
    assert decision().choice is None and decision().why_not == "the customer opted out of automatic messages"
