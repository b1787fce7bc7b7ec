"""The reference classifier: intents and entities in English, Spanish and Portuguese, and
results that pass the result contract."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.test import override_settings

from classifier.backends.base import Catalog, CatalogProduct, load_backend
from classifier.catalog import catalog_for, install_sample_catalog, sample_catalog
from classifier.checks import check_backend
from classifier.reference import ReferenceClassifier
from classifier.results import result_value
from tests.support.requests import encode, request
from whatsapp.contracts.request import parse_request
from whatsapp.contracts.result import parse_event

CATALOG = sample_catalog()
CLASSIFIER = ReferenceClassifier()


def classify(text: str, received_at: datetime | None = None, catalog: Catalog = CATALOG):
    return CLASSIFIER.classify_text(text, received_at or datetime.now(UTC), catalog)


@pytest.mark.parametrize(
    ("text", "intent", "language"),
    [
        ("Hi, can I get 2 sourdough loaves for pickup?", "ORDER_REQUEST", "en"),
        ("quiero 3 empanadas y un alfajor porfa", "ORDER_REQUEST", "es"),
        ("quero 10 pão de queijo pra amanhã", "ORDER_REQUEST", "pt"),
        ("how much is the cheesecake?", "PRICING_INQUIRY", "en"),
        ("cuánto cuestan los churros?", "PRICING_INQUIRY", "es"),
        ("qto custa o brigadeiro?", "PRICING_INQUIRY", "pt"),
        ("do you have croissants today?", "AVAILABILITY_INQUIRY", "en"),
        ("tienen brownies sin nueces?", "AVAILABILITY_INQUIRY", "es"),
        ("vcs tem empanada hoje?", "AVAILABILITY_INQUIRY", "pt"),
        ("my order never arrived, I want a refund", "COMPLAINT", "en"),
        ("el pan llegó quemado, pésima atención", "COMPLAINT", "es"),
        ("o bolo veio amassado, não gostei", "COMPLAINT", "pt"),
        ("can you call me tomorrow at 3pm?", "SCHEDULE_CALL", "en"),
        ("llámame el viernes a las 10 por favor", "SCHEDULE_CALL", "es"),
        ("me liga amanhã às 15h", "SCHEDULE_CALL", "pt"),
        ("good morning!", "UNKNOWN", "en"),
        ("hola, buenos días", "UNKNOWN", "es"),
        ("oi, bom dia", "UNKNOWN", "pt"),
    ],
)
def test_intent_and_language_in_three_languages(text: str, intent: str, language: str) -> None:
    result = classify(text)
    assert (result.intent, result.language) == (intent, language)
    assert 0.0 <= result.confidence <= 1.0


def test_a_greeting_is_less_certain_than_a_clear_order() -> None:
    assert classify("ok").confidence < classify("I want 2 croissants and 1 baguette please").confidence


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Typos, plurals and the customer's own spelling of the catalog's names.
        ("2 croisants and a bagette pls", [("CR-02", 2), ("BG-03", 1)]),
        ("quiero 4 alfajores y 6 brigaderos", [("AL-09", 4), ("BD-12", 6)]),
        ("3 muffins de blueberry e 2 cinamon rolls", [("MF-10", 3), ("CB-11", 2)]),
        # SKUs, with or without the dash, and counts written after them.
        ("SD-01 x2 and cr02 x4", [("SD-01", 2), ("CR-02", 4)]),
        # Counts in words, in each language, and dozens.
        ("two brownies and three empanadas", [("BR-07", 2), ("EM-06", 3)]),
        ("dos cheesecakes y una docena de churros", [("CK-08", 2), ("CH-05", 12)]),
        ("duas empanadas e meia dúzia de pão de queijo", [("EM-06", 2), ("PQ-04", 6)]),
    ],
)
def test_products_are_matched_by_name_or_sku_with_their_quantities(text: str, expected: list) -> None:
    products = classify(text).entities["products"]
    assert [(p["sku"], p.get("quantity")) for p in products] == expected
    names = {p.sku: p.name for p in CATALOG.products}
    assert all(p["name"] == names[p["sku"]] for p in products)


def test_words_that_only_look_like_a_product_match_nothing() -> None:
    # "pan", "roll" and "bread" are no product of their own; "brown" is not "brownie".
    assert "products" not in classify("I want bread and a roll, brown sugar on the side").entities


def test_an_empty_catalog_matches_no_product() -> None:
    assert "products" not in classify("2 croissants please", catalog=Catalog(business_id="nobody")).entities


def test_a_catalog_of_another_business_is_matched_as_it_is() -> None:
    florist = Catalog(business_id="florist", products=(CatalogProduct(sku="RS-1", name="red roses bouquet"),))
    result = classify("I'd like 2 bouquets of red roses", catalog=florist)
    assert [(p["sku"], p.get("quantity")) for p in result.entities["products"]] == [("RS-1", 2)]


@pytest.mark.parametrize(
    ("text", "days", "hour", "minute"),
    [
        ("can you call me tomorrow at 3pm?", 1, 15, 0),
        ("me pueden llamar mañana a las 3 de la tarde?", 1, 15, 0),
        ("pode me ligar amanhã às 11h30?", 1, 11, 30),
        ("me liga depois de amanhã às 9h", 2, 9, 0),
        ("please call me back tomorrow morning", 1, 10, 0),
    ],
)
def test_preferred_time_is_counted_from_received_at(text: str, days: int, hour: int, minute: int) -> None:
    # A time relative to now, on a zone that is not UTC: the answer keeps the message's offset.
    zone = timezone(timedelta(hours=-3))
    received_at = datetime.now(zone).replace(hour=9, minute=5, second=0, microsecond=0)
    result = classify(text, received_at)
    assert result.intent == "SCHEDULE_CALL"
    moment = datetime.fromisoformat(result.entities["preferred_time"])
    assert moment.utcoffset() == timedelta(hours=-3)
    assert moment == (received_at + timedelta(days=days)).replace(hour=hour, minute=minute)


def test_a_weekday_means_the_next_one_and_in_two_hours_means_two_hours() -> None:
    received_at = datetime.now(UTC).replace(second=0, microsecond=0)
    friday = datetime.fromisoformat(classify("call me friday at 10am", received_at).entities["preferred_time"])
    assert friday.weekday() == 4 and friday.hour == 10
    assert timedelta(0) < friday - received_at <= timedelta(days=7)
    soon = classify("ring me in 2 hours pls", received_at).entities["preferred_time"]
    assert datetime.fromisoformat(soon) == received_at + timedelta(hours=2)


def test_a_call_request_without_a_time_has_no_preferred_time() -> None:
    result = classify("I'd like to book a call to discuss catering")
    assert result.intent == "SCHEDULE_CALL"
    assert "preferred_time" not in result.entities


@pytest.mark.parametrize(
    ("text", "reference"),
    [
        ("my order ORD-4521 never arrived", "ORD-4521"),
        ("you charged me twice for order #8812", "8812"),
        ("mi pedido 5531 llegó frío", "5531"),
        ("a encomenda nº 7781 veio errada", "7781"),
    ],
)
def test_order_references(text: str, reference: str) -> None:
    result = classify(text)
    assert result.intent == "COMPLAINT"
    assert result.entities["order_reference"] == reference


@pytest.mark.parametrize(
    ("text", "severity"),
    [
        ("found a hair in my empanada, disgusting, I want a refund", "high"),
        ("meu filho passou mal com os muffins", "high"),
        ("the croissants were stale", "medium"),
        ("el cheesecake estaba un poco dulce de más", "low"),
    ],
)
def test_complaint_severity(text: str, severity: str) -> None:
    result = classify(text)
    assert (result.intent, result.entities["severity"]) == ("COMPLAINT", severity)


@pytest.mark.parametrize(
    "text",
    [
        "Hi, I'd like 2 sourdough loaves and a baguette 🙏",
        "me liga amanhã às 15h",
        "found a hair in order ORD-12, refund NOW!!!",
        "",
        "👍",
        "x" * 4096,
        "٢ خبز من فضلك",
    ],
)
def test_every_result_passes_the_result_contract(text: str) -> None:
    req = parse_request(encode(request(text, wamid=f"wamid.{abs(hash(text))}")))
    classification = CLASSIFIER.classify(req, CATALOG)
    value, event = result_value(req, classification, CLASSIFIER.model_name, 3)
    parsed = parse_event(value)
    assert parsed == event
    assert parsed.processing_id == req.processing_id and parsed.message_id == req.message.id
    assert parsed.message.text == text and parsed.intent.value == classification.intent
    assert parsed.entities.language == classification.language
    assert parsed.ai is not None and parsed.ai.model == "reference-classifier/1"


def test_the_backend_setting_is_checked() -> None:
    assert check_backend() == []
    assert isinstance(load_backend(), ReferenceClassifier)
    with override_settings(CLASSIFIER_BACKEND="classifier.nowhere.Model"):
        assert [error.id for error in check_backend()] == ["classifier.E001"]
    with override_settings(CLASSIFIER_BACKEND="classifier.catalog.Catalog"):
        assert [error.id for error in check_backend()] == ["classifier.E002"]


@pytest.mark.django_db
def test_the_catalog_is_read_from_the_database_and_follows_changes() -> None:
    from leads.models import Business, Product

    business = Business.objects.create(business_id="shop-1", tenant_id="t-1", display_name="Shop")
    Product.objects.create(business=business, sku="CR-02", name="croissant")
    assert [p.sku for p in catalog_for("shop-1").products] == ["CR-02"]
    Product.objects.create(business=business, sku="BG-03", name="baguette")
    business.save()  # what the admin does when a product is edited inline
    assert sorted(p.sku for p in catalog_for("shop-1").products) == ["BG-03", "CR-02"]
    assert catalog_for("no-such-shop").products == ()


@pytest.mark.django_db
def test_the_sample_catalog_installs_into_a_business_and_is_what_the_classifier_reads() -> None:
    from leads.models import Business, Product

    business = Business.objects.create(business_id="acme-bakery", tenant_id="tenant-acme", display_name="Acme")
    Product.objects.create(business=business, sku="SD-01", name="old name", price="1.00", stock=3)
    catalog_for("acme-bakery")  # cached before the install
    assert install_sample_catalog(business) == len(CATALOG.products)
    assert Product.objects.get(business=business, sku="SD-01").name == "sourdough loaf"
    assert set(catalog_for("acme-bakery").products) == set(CATALOG.products)


def test_a_message_without_language_evidence_takes_the_business_language() -> None:
    brazilian = Catalog(business_id="padaria", products=CATALOG.products, default_language="pt-BR")
    assert classify("👍", catalog=brazilian).language == "pt"
    assert classify("ok", catalog=brazilian).language == "pt"
    # Evidence wins over the default, and product names are no evidence ("pão de queijo").
    assert classify("do you have pão de queijo today?", catalog=brazilian).language == "en"
