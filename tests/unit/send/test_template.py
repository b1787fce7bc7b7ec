"""The template's language and parameters (whatsapp.send.template), and the Graph error class."""

from __future__ import annotations

from core.clients import cloud_api
from whatsapp.models import MessageTemplate
from whatsapp.send.template import parameter_text, pick_language


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
