"""Intent handlers: routing, thresholds, plans and replies, against the real catalog in Postgres."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

import whatsapp.handlers  # noqa: F401  (registers every handler)
from leads.models import Lead, Product
from tests.support.events import encode, event, now_iso
from whatsapp.actions.create_order import CreateOrder
from whatsapp.actions.notify_sales import NotifySales
from whatsapp.apps import load_plugin
from whatsapp.contracts.result import Intent, parse_event
from whatsapp.handlers import replies
from whatsapp.handlers.base import HandlerResult, IntentHandler, MessageContext, PlannedAction
from whatsapp.handlers.registry import FALLBACK, handlers, plan, select

pytestmark = pytest.mark.django_db

CUSTOMER_TEXT = "PLEASE-DO-NOT-ECHO my number is 15550123456"
CALL_AT = "2026-11-27T15:00:00+01:00"

# Entities that let each intent's handler act, and the threshold it must reach.
HANDLED: dict[str, tuple[str, dict[str, Any], float]] = {
    "ORDER_REQUEST": ("order", {"products": [{"sku": "SD-01", "name": "sourdough loaf", "quantity": 2}]}, 0.85),
    "PRICING_INQUIRY": ("pricing", {"products": [{"name": "Sourdough Loaf"}]}, 0.7),
    "AVAILABILITY_INQUIRY": ("availability", {"products": [{"sku": "SD-01", "name": "sourdough loaf"}]}, 0.7),
    "COMPLAINT": ("complaint", {}, 0.6),
    "SCHEDULE_CALL": ("schedule_call", {"preferred_time": CALL_AT}, 0.7),
}


@pytest.fixture
def catalog(business) -> None:
    Product.objects.create(business=business, sku="CR-02", name="butter croissant", price="2.25", stock=0)
    Product.objects.create(business=business, sku="BG-03", name="bagel", price="1.10", currency="EUR", stock=3)


@pytest.fixture
def make_context(business) -> Callable[..., MessageContext]:
    lead = Lead.objects.create(lead_id="lead-123", business=business, wa_id="15550123456")

    def make(
        intent: str = "ORDER_REQUEST",
        confidence: float = 0.95,
        entities: dict[str, Any] | None = None,
        language: str | None = None,
        **overrides: Any,
    ) -> MessageContext:
        entities = dict(HANDLED[intent][1] if entities is None and intent in HANDLED else entities or {})
        if language is not None:
            entities["language"] = language
        body = event(
            "proc-test",
            intent=intent,
            confidence=confidence,
            entities=entities,
            message={"text": CUSTOMER_TEXT, "received_at": now_iso()},
            **overrides,
        )
        business.refresh_from_db()
        catalog = {product.sku: product for product in business.products.all()}
        return MessageContext(event=parse_event(encode(body)), business=business, lead=lead, catalog=catalog)

    return make


def actions(result: HandlerResult) -> list[tuple[str, dict[str, Any]]]:
    return [(action.name, action.params) for action in result.actions]


def assert_no_customer_data(result: HandlerResult) -> None:
    for text in (result.reply_text or "", result.note, json.dumps([a.params for a in result.actions])):
        assert "PLEASE-DO-NOT-ECHO" not in text
        assert "15550123456" not in text


# --- registration and routing -------------------------------------------------------------


def test_importing_the_package_registers_every_handler():
    assert set(handlers.names()) >= {"order", "pricing", "complaint", "availability", "schedule_call", FALLBACK}
    for handler in handlers:
        assert isinstance(handler, IntentHandler)
        assert isinstance(handler.intent, Intent) and isinstance(handler.priority, int) and handler.name


@pytest.mark.parametrize("intent", sorted(HANDLED))
def test_intent_at_its_threshold_is_handled(make_context, intent):
    name, _, threshold = HANDLED[intent]
    context = make_context(intent, confidence=threshold)
    assert select(context).name == name
    result = plan(context)
    assert result.handler == name
    assert not any(a.name == "FLAG_FOR_REVIEW" and a.params.get("reason") == "low_confidence" for a in result.actions)
    assert_no_customer_data(result)


@pytest.mark.parametrize("intent", sorted(HANDLED))
def test_intent_just_below_its_threshold_goes_to_review(make_context, intent):
    threshold = HANDLED[intent][2]
    result = plan(make_context(intent, confidence=round(threshold - 0.01, 2)))
    assert result.handler == FALLBACK
    assert actions(result) == [("FLAG_FOR_REVIEW", {"reason": "low_confidence", "intent": intent})]
    assert result.should_escalate is True
    assert result.lead_state is None
    assert result.reply_text == "Thanks for your message! A member of our team will get back to you shortly."
    assert_no_customer_data(result)


@pytest.mark.parametrize(
    "intent,entities",
    [
        ("ORDER_REQUEST", {}),
        ("ORDER_REQUEST", {"products": []}),
        ("PRICING_INQUIRY", {}),
        ("AVAILABILITY_INQUIRY", {"order_reference": "A-1"}),
        ("SCHEDULE_CALL", {"products": [{"sku": "SD-01", "name": "sourdough loaf"}]}),
    ],
)
def test_missing_required_entities_go_to_review(make_context, intent, entities):
    result = plan(make_context(intent, confidence=0.99, entities=entities))
    assert result.handler == FALLBACK
    assert actions(result) == [("FLAG_FOR_REVIEW", {"reason": "missing_entities", "intent": intent})]
    assert result.should_escalate is True and result.lead_state is None


def test_complaint_needs_no_entities(make_context):
    assert plan(make_context("COMPLAINT", entities={})).handler == "complaint"


@pytest.mark.parametrize("sent", ["UNKNOWN", "REFUND_REQUEST"])
def test_unknown_intent_goes_to_review_even_when_confident(make_context, sent):
    context = make_context(sent, confidence=1.0, entities={"products": [{"sku": "SD-01", "name": "sourdough loaf"}]})
    assert context.event.intent is Intent.UNKNOWN
    result = plan(context)
    assert result.handler == FALLBACK
    assert actions(result) == [("FLAG_FOR_REVIEW", {"reason": "unknown_intent", "intent": "UNKNOWN"})]
    assert result.should_escalate is True and result.lead_state is None
    assert_no_customer_data(result)


def test_business_threshold_override_raises_and_lowers_the_bar(business, make_context):
    business.confidence_thresholds = {"ORDER_REQUEST": 0.95, "COMPLAINT": 0.3}
    business.save()
    assert plan(make_context("ORDER_REQUEST", confidence=0.94)).handler == FALLBACK
    assert plan(make_context("ORDER_REQUEST", confidence=0.95)).handler == "order"
    assert plan(make_context("COMPLAINT", confidence=0.3)).handler == "complaint"
    assert plan(make_context("COMPLAINT", confidence=0.29)).handler == FALLBACK
    # Intents without an override keep their default.
    assert plan(make_context("PRICING_INQUIRY", confidence=0.69)).handler == FALLBACK


class _StandIn(IntentHandler):
    intent = Intent.ORDER_REQUEST
    accepts = True

    def can_handle(self, context: MessageContext) -> bool:
        return self.accepts

    def handle(self, context: MessageContext) -> HandlerResult:
        return HandlerResult(handler=self.name, actions=[PlannedAction(NotifySales, {"kind": "vip"})], reply_text=None)


@pytest.fixture
def stand_ins() -> Iterator[Callable[..., IntentHandler]]:
    """Register test handlers for one test and always take them out again."""
    added: list[str] = []

    def add(name: str, priority: int, accepts: bool = True, intent: Intent = Intent.ORDER_REQUEST) -> IntentHandler:
        cls = type(
            f"StandIn_{name}", (_StandIn,), {"name": name, "priority": priority, "accepts": accepts, "intent": intent}
        )
        handlers.register(name)(cls)
        added.append(name)
        return handlers.get(name)

    yield add
    for name in added:
        handlers.unregister(name)


def test_highest_priority_handler_that_can_handle_wins(make_context, stand_ins):
    stand_ins("test-low", priority=-5)
    stand_ins("test-vip", priority=100)
    stand_ins("test-picky", priority=200, accepts=False)
    result = plan(make_context("ORDER_REQUEST"))
    assert result.handler == "test-vip"
    assert actions(result) == [("NOTIFY_SALES", {"kind": "vip"})]


def test_priority_does_not_bypass_the_threshold_or_the_intent(make_context, stand_ins):
    stand_ins("test-vip", priority=100)
    stand_ins("test-unknown", priority=100, intent=Intent.UNKNOWN)
    assert plan(make_context("ORDER_REQUEST", confidence=0.84)).handler == FALLBACK
    assert plan(make_context("PRICING_INQUIRY")).handler == "pricing"
    assert plan(make_context("UNKNOWN")).handler == FALLBACK


def test_a_plan_naming_an_unknown_action_fails_when_it_is_made():
    with pytest.raises(LookupError, match="no action executor registered as 'CREAT_ORDER'; known: CREATE_ORDER, "):
        PlannedAction("CREAT_ORDER", {"lines": []})
    assert PlannedAction(CreateOrder, {"lines": []}) == PlannedAction("CREATE_ORDER", {"lines": []})
    assert PlannedAction(NotifySales).params == {}


def test_unregistering_restores_the_default(make_context):
    handlers.register("test-vip")(type("Vip", (_StandIn,), {"name": "test-vip", "priority": 100}))
    try:
        assert select(make_context("ORDER_REQUEST")).name == "test-vip"
    finally:
        handlers.unregister("test-vip")
    assert select(make_context("ORDER_REQUEST")).name == "order"
    assert "test-vip" not in handlers.names()
    with pytest.raises(LookupError):
        handlers.unregister("never-registered")


# --- plans ---------------------------------------------------------------------------------


def test_order_in_stock_creates_the_order(make_context):
    result = plan(make_context("ORDER_REQUEST"))
    assert actions(result) == [
        ("CREATE_ORDER", {"lines": [{"sku": "SD-01", "quantity": 2}]}),
        ("NOTIFY_SALES", {"kind": "order"}),
    ]
    assert result.lead_state == "CONVERTED"
    assert result.should_escalate is False
    assert "Acme Bakery" in result.reply_text
    assert "2 x sourdough loaf: 13.00 USD" in result.reply_text
    assert "Total: 13.00 USD" in result.reply_text
    assert result.note
    assert_no_customer_data(result)


def test_order_resolves_by_name_defaults_quantity_and_merges_lines(make_context, catalog):
    result = plan(
        make_context(
            "ORDER_REQUEST",
            entities={
                "products": [
                    {"name": "  SOURDOUGH   loaf "},
                    {"name": "Bagel", "quantity": 3},
                    {"sku": "sd-01", "name": "sourdough", "quantity": 4},
                ]
            },
        )
    )
    assert actions(result)[0] == (
        "CREATE_ORDER",
        {"lines": [{"sku": "SD-01", "quantity": 5}, {"sku": "BG-03", "quantity": 3}]},
    )
    assert "5 x sourdough loaf: 32.50 USD" in result.reply_text
    assert "3 x bagel: 3.30 EUR" in result.reply_text
    assert "Total: 32.50 USD + 3.30 EUR" in result.reply_text
    assert result.lead_state == "CONVERTED"


@pytest.mark.parametrize(
    "products,skus",
    [
        ([{"sku": "NOPE-9", "name": "sourdough loaf"}], ["NOPE-9"]),  # a wrong SKU never falls back to the name
        ([{"sku": "SD-01", "name": "sourdough loaf"}, {"name": "rye bread", "quantity": 2}], ["rye bread"]),
        ([{"sku": "NOPE-9", "name": "x"}, {"sku": "CR-02", "name": "butter croissant"}], ["NOPE-9"]),  # unknown wins
    ],
)
def test_order_with_unknown_product_goes_to_a_person(make_context, catalog, products, skus):
    result = plan(make_context("ORDER_REQUEST", entities={"products": products}))
    assert result.handler == "order"
    assert actions(result) == [("FLAG_FOR_REVIEW", {"reason": "unknown_product", "skus": skus})]
    assert result.should_escalate is True
    assert result.lead_state == "QUALIFIED"
    assert "confirm" in result.reply_text and "Acme Bakery" in result.reply_text


@pytest.mark.parametrize(
    "products,skus",
    [
        ([{"sku": "CR-02", "name": "butter croissant"}], ["CR-02"]),  # stock 0, default quantity 1
        ([{"sku": "SD-01", "name": "sourdough loaf", "quantity": 501}], ["SD-01"]),
        ([{"sku": "BG-03", "name": "bagel", "quantity": 2}, {"name": "bagel", "quantity": 2}], ["BG-03"]),  # 4 > 3
    ],
)
def test_order_out_of_stock_goes_to_a_person(make_context, catalog, products, skus):
    result = plan(make_context("ORDER_REQUEST", entities={"products": products}))
    assert actions(result) == [("FLAG_FOR_REVIEW", {"reason": "out_of_stock", "skus": skus})]
    assert not any(a.name == "CREATE_ORDER" for a in result.actions)
    assert result.should_escalate is True and result.lead_state == "QUALIFIED"


def test_order_of_exactly_the_stock_is_accepted(make_context, catalog):
    result = plan(
        make_context("ORDER_REQUEST", entities={"products": [{"sku": "BG-03", "name": "bagel", "quantity": 3}]})
    )
    assert actions(result)[0] == ("CREATE_ORDER", {"lines": [{"sku": "BG-03", "quantity": 3}]})


def test_ambiguous_name_is_not_guessed(business, make_context):
    Product.objects.create(business=business, sku="SD-02", name="Sourdough Loaf", price="7.00", stock=5)
    result = plan(make_context("ORDER_REQUEST", entities={"products": [{"name": "sourdough loaf"}]}))
    assert actions(result) == [("FLAG_FOR_REVIEW", {"reason": "unknown_product", "skus": ["sourdough loaf"]})]


def test_pricing_lists_known_prices_and_unknown_products(make_context, catalog):
    result = plan(
        make_context(
            "PRICING_INQUIRY",
            entities={
                "products": [{"sku": "SD-01", "name": "sourdough loaf"}, {"name": "bagel"}, {"name": "rye bread"}]
            },
        )
    )
    assert actions(result) == [("NOTIFY_SALES", {"kind": "pricing"})]
    assert result.lead_state == "CONTACTED" and result.should_escalate is False
    assert result.reply_text.splitlines() == [
        "Here are the prices at Acme Bakery:",
        "sourdough loaf: 6.50 USD",
        "bagel: 1.10 EUR",
        "rye bread: not in our catalog",
    ]


def test_availability_reports_stock_per_product(make_context, catalog):
    result = plan(
        make_context(
            "AVAILABILITY_INQUIRY",
            entities={
                "products": [
                    {"sku": "SD-01", "name": "sourdough loaf"},
                    {"sku": "CR-02", "name": "butter croissant"},
                    {"name": "rye bread"},
                ]
            },
        )
    )
    assert actions(result) == []
    assert result.lead_state == "CONTACTED" and result.should_escalate is False
    assert result.reply_text.splitlines() == [
        "Here's what Acme Bakery has right now:",
        "sourdough loaf: in stock (500 available)",
        "butter croissant: out of stock",
        "rye bread: not in our catalog",
    ]


@pytest.mark.parametrize(
    "entities,severity,reference",
    [
        ({}, "medium", None),
        ({"severity": "low", "order_reference": "ORD-42"}, "low", "ORD-42"),
        ({"severity": "medium"}, "medium", None),
    ],
)
def test_complaint_opens_a_ticket(make_context, entities, severity, reference):
    result = plan(make_context("COMPLAINT", entities=entities))
    assert actions(result) == [("CREATE_SUPPORT_TICKET", {"severity": severity, "order_reference": reference})]
    assert result.should_escalate is False
    assert result.lead_state is None
    assert "sorry" in result.reply_text and "ticket" in result.reply_text and "Acme Bakery" in result.reply_text


def test_high_severity_complaint_escalates(make_context):
    result = plan(make_context("COMPLAINT", entities={"severity": "high", "order_reference": "ORD-42"}))
    assert actions(result) == [
        ("CREATE_SUPPORT_TICKET", {"severity": "high", "order_reference": "ORD-42"}),
        ("FLAG_FOR_REVIEW", {"reason": "high_severity_complaint"}),
        ("NOTIFY_SALES", {"kind": "complaint"}),
    ]
    assert result.should_escalate is True and result.lead_state is None
    assert "urgent" in result.reply_text
    assert_no_customer_data(result)


def test_schedule_call_books_the_time(make_context):
    result = plan(make_context("SCHEDULE_CALL"))
    assert actions(result) == [
        ("SCHEDULE_CALL", {"preferred_time": "2026-11-27T15:00:00+01:00"}),
        ("NOTIFY_SALES", {"kind": "callback"}),
    ]
    assert result.lead_state == "QUALIFIED" and result.should_escalate is False
    assert result.reply_text == "Great! Acme Bakery will call you on 2026-11-27 at 15:00 (UTC+01:00)."


def test_schedule_call_keeps_the_customers_offset(make_context):
    result = plan(make_context("SCHEDULE_CALL", entities={"preferred_time": "2026-11-27T09:30:00-03:00"}))
    assert actions(result)[0] == ("SCHEDULE_CALL", {"preferred_time": "2026-11-27T09:30:00-03:00"})
    assert "2026-11-27 at 09:30 (UTC-03:00)" in result.reply_text


# --- languages -----------------------------------------------------------------------------


def test_every_handler_answers_in_every_language():
    built_in = [h for h in handlers if type(h).__module__.startswith("whatsapp.handlers.")]
    assert len(built_in) == 6
    for handler in built_in:
        assert sys.modules[type(handler).__module__].REPLIES.languages() == {"en", "es", "pt"}, handler.name


def test_templates_missing_in_a_language_are_refused_when_defined():
    with pytest.raises(ValueError, match="replies in 'es' define \\['a'\\], 'en' defines \\['a', 'b'\\]"):
        replies.Replies({"en": {"a": "A", "b": "B"}, "es": {"a": "A"}})
    with pytest.raises(ValueError, match="need 'en' templates"):
        replies.Replies({"es": {"a": "A"}})


@pytest.mark.parametrize(
    "language,expected",
    [
        ("en", "Thanks for your message! A member of our team will get back to you shortly."),
        ("es", "¡Gracias por tu mensaje! Una persona de nuestro equipo te responderá en breve."),
        ("pt-BR", "Obrigado pela sua mensagem! Uma pessoa da nossa equipe responderá em breve."),
        ("PT", "Obrigado pela sua mensagem! Uma pessoa da nossa equipe responderá em breve."),
        ("fr", "Thanks for your message! A member of our team will get back to you shortly."),
    ],
)
def test_fallback_reply_in_the_customers_language(make_context, language, expected):
    result = plan(make_context("UNKNOWN", language=language))
    assert result.reply_text == expected


@pytest.mark.parametrize(
    "language,fragment",
    [
        ("en", "Thanks for your order with Acme Bakery!"),
        ("es", "¡Gracias por tu pedido en Acme Bakery!"),
        ("pt-BR", "Obrigado pelo seu pedido em Acme Bakery!"),
        ("fr", "Thanks for your order with Acme Bakery!"),
    ],
)
def test_order_reply_in_the_customers_language(make_context, language, fragment):
    result = plan(make_context("ORDER_REQUEST", language=language))
    assert result.reply_text.startswith(fragment)
    assert "13.00 USD" in result.reply_text


@pytest.mark.parametrize(
    "language,expected",
    [
        ("es", "¡Perfecto! Acme Bakery te llamará el 2026-11-27 a las 15:00 (UTC+01:00)."),
        ("pt-BR", "Perfeito! Acme Bakery vai ligar para você em 2026-11-27 às 15:00 (UTC+01:00)."),
    ],
)
def test_schedule_call_reply_in_the_customers_language(make_context, language, expected):
    assert plan(make_context("SCHEDULE_CALL", language=language)).reply_text == expected


@pytest.mark.parametrize("intent", sorted(HANDLED))
@pytest.mark.parametrize("language", ["es", "pt-BR"])
def test_every_handled_reply_is_translated(make_context, intent, language):
    english = plan(make_context(intent, language="en")).reply_text
    translated = plan(make_context(intent, language=language)).reply_text
    assert translated and translated != english


def test_business_default_language_applies_when_the_message_has_none(business, make_context):
    business.default_language = "es"
    business.save()
    assert plan(make_context("PRICING_INQUIRY")).reply_text.startswith("Estos son los precios en Acme Bakery:")
    assert plan(make_context("PRICING_INQUIRY", language="en")).reply_text.startswith("Here are the prices")


# --- plugins -------------------------------------------------------------------------------


def test_a_misspelt_plugin_module_stops_the_start_naming_the_setting():
    with pytest.raises(ImproperlyConfigured, match=re.escape("WHATSAPP_PLUGINS names 'tests.support.plugin_exampel'")):
        load_plugin("tests.support.plugin_exampel")
    with pytest.raises(ImproperlyConfigured, match=re.escape("WHATSAPP_PLUGINS names 'no_such_package.plugins'")):
        load_plugin("no_such_package.plugins")
