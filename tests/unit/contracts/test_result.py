"""Tests for the v1 AI-result event contract: unit tests without a database, then proof against
the real Postgres that whatever the contract accepts at its edges can be stored."""

from __future__ import annotations

import copy
import json
import pickle
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from django.db import DataError, transaction

import whatsapp.handlers  # noqa: F401  (registers every handler)
from leads.models import Business, CallbackRequest, Lead
from tests.support.events import later_iso, now_iso
from whatsapp.actions.base import ActionContext
from whatsapp.actions.schedule_call import ScheduleCall
from whatsapp.contracts.result import (
    MAX_VALUE_BYTES,
    AIResultEvent,
    ContractError,
    Intent,
    parse_event,
    to_payload,
)
from whatsapp.handlers.base import MessageContext
from whatsapp.handlers.registry import plan
from whatsapp.ingest.intake import inbox_values, insert_inbox_rows
from whatsapp.kafka import Record
from whatsapp.models import ProcessedMessage
from whatsapp.saga import load_event, upsert_lead

EXAMPLE: dict[str, Any] = {
    "schema_version": 1,
    "processing_id": "proc-7f3c2a",
    "lead_id": "lead-123",
    "business_id": "acme-bakery",
    "tenant_id": "tenant-acme",
    "message_id": "wamid.HBgLMTU1NTAxMjM0NTY3FQIAEhgg",
    "customer": {"wa_id": "15550123456", "name": "Ana"},
    "message": {
        "text": "Hi, I'd like 2 sourdough loaves for Friday",
        "received_at": "2026-11-24T10:30:00+00:00",
    },
    "intent": "ORDER_REQUEST",
    "confidence": 0.95,
    "entities": {"products": [{"sku": "SD-01", "name": "sourdough loaf", "quantity": 2}]},
    "ai": {"model": "intent-v3", "processing_ms": 140},
}

_MISSING = object()


def encode(data: Any) -> bytes:
    return json.dumps(data).encode("utf-8")


def with_change(path: str, value: Any) -> dict[str, Any]:
    """The example with one dotted path set to value, or removed when value is _MISSING."""
    data = copy.deepcopy(EXAMPLE)
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    if value is _MISSING:
        node.pop(last, None)
    else:
        node[last] = value
    return data


def kept_value(event: AIResultEvent, path: str) -> Any:
    """What the stored payload holds at a dotted path."""
    node: Any = to_payload(event)
    for part in path.split("."):
        node = None if node is None else node[part]
    return node


def rejection(value: bytes | None) -> ContractError:
    with pytest.raises(ContractError) as info:
        parse_event(value)
    return info.value


def test_example_event_parses() -> None:
    event = parse_event(encode(EXAMPLE))

    assert isinstance(event, AIResultEvent)
    assert event.schema_version == 1
    assert event.processing_id == "proc-7f3c2a"
    assert event.tenant_id == "tenant-acme"
    assert event.customer.wa_id == "15550123456"
    assert event.message.received_at == datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
    assert event.intent is Intent.ORDER_REQUEST
    assert event.intent_raw == "ORDER_REQUEST"
    assert event.confidence == 0.95
    assert event.entities.products[0].sku == "SD-01"
    assert event.entities.products[0].quantity == 2
    assert event.ai is not None and event.ai.processing_ms == 140


def test_minimal_event_parses_with_defaults() -> None:
    data = {
        key: EXAMPLE[key]
        for key in (
            "schema_version",
            "processing_id",
            "lead_id",
            "business_id",
            "customer",
            "message",
            "intent",
            "confidence",
        )
    }
    data["customer"] = {"wa_id": "15550123456"}

    event = parse_event(encode(data))

    assert event.tenant_id is None
    assert event.message_id is None
    assert event.customer.name is None
    assert event.entities.products == []
    assert event.ai is None


def test_to_payload_is_plain_json() -> None:
    payload = to_payload(parse_event(encode(EXAMPLE)))

    assert json.loads(json.dumps(payload)) == payload
    assert payload["intent"] == "ORDER_REQUEST"
    assert payload["intent_raw"] == "ORDER_REQUEST"
    assert payload["customer"] == {"wa_id": "15550123456", "name": "Ana"}
    assert datetime.fromisoformat(payload["message"]["received_at"]) == datetime(2026, 11, 24, 10, 30, tzinfo=UTC)


def test_stored_payload_validates_again_and_keeps_intent_raw() -> None:
    event = parse_event(encode(with_change("intent", "REFUND_REQUEST")))

    again = AIResultEvent.model_validate(to_payload(event))

    assert again.intent is Intent.UNKNOWN
    assert again.intent_raw == "REFUND_REQUEST"


@pytest.mark.parametrize(
    "accepted",
    [
        ("confidence", 0),
        ("confidence", 1),
        ("confidence", 0.0),
        ("confidence", 1.0),
        ("customer.wa_id", "1234567"),
        ("customer.wa_id", "123456789012345"),
        ("message.text", ""),
        ("message.text", "x" * 4096),
        ("message.received_at", "2026-11-24T10:30:00Z"),
        ("message.received_at", "2026-11-24T12:30:00.123456+02:00"),
        ("processing_id", "a" * 128),
        ("processing_id", "A.b_c:d-9"),
        ("lead_id", "x" * 64),
        ("tenant_id", "t" * 64),
        ("tenant_id", None),
        ("message_id", "m" * 256),
        ("customer.name", "n" * 256),
        ("ai.model", "m" * 128),
        ("ai.processing_ms", 0),
        ("ai", None),
        ("entities.severity", "high"),
        ("entities.language", "pt-BR"),
        ("entities.language", "es"),
        ("entities.order_reference", "r" * 64),
        ("entities.preferred_time", "2026-11-27T09:00:00-03:00"),
        ("entities.products", [{"name": "rye"}]),
        ("entities.products", [{"name": "rye", "quantity": 10_000}]),
        ("entities.products", [{"name": "rye"}] * 50),
        ("entities.products", [{"name": "n" * 256, "sku": "s" * 64}]),
        ("ai.processing_ms", 86_400_000),
        ("message.received_at", "2026-11-24T10:30:00+15:59"),
        ("message.received_at", "2026-11-24T10:30:00-15:59"),
        ("message.received_at", "0001-01-01T00:00:00Z"),
        ("message.received_at", "0001-01-01T00:00:00-15:59"),
        ("message.received_at", "9999-12-31T23:59:59.999999Z"),
        ("message.received_at", "9999-12-31T23:59:59.999999+15:59"),
        ("entities.preferred_time", "2026-11-27T09:00:00+15:59"),
        ("entities.preferred_time", "2026-11-27T09:00:00-15:59"),
    ],
    ids=lambda case: f"{case[0]}={str(case[1])[:20]}",
)
def test_boundary_values_are_accepted(accepted: tuple[str, Any]) -> None:
    path, value = accepted

    kept = kept_value(parse_event(encode(with_change(path, value))), path)

    if path.endswith(("received_at", "preferred_time")):
        assert datetime.fromisoformat(kept) == datetime.fromisoformat(value)
    elif path == "entities.products":
        assert [{key: item for key, item in product.items() if item is not None} for product in kept] == value
    else:
        assert kept == value


@pytest.mark.parametrize(
    "path, value, rule",
    [
        # required fields
        ("processing_id", _MISSING, "field required"),
        ("lead_id", _MISSING, "field required"),
        ("business_id", _MISSING, "field required"),
        ("customer", _MISSING, "field required"),
        ("customer.wa_id", _MISSING, "field required"),
        ("message", _MISSING, "field required"),
        ("message.text", _MISSING, "field required"),
        ("message.received_at", _MISSING, "field required"),
        ("intent", _MISSING, "field required"),
        ("confidence", _MISSING, "field required"),
        # identifiers
        ("processing_id", "", "at least 1"),
        ("processing_id", "a" * 129, "at most 128"),
        ("processing_id", "proc 7f3c2a", "must contain only"),
        ("processing_id", "proc/1", "must contain only"),
        ("lead_id", "x" * 65, "at most 64"),
        ("lead_id", "lead#1", "must contain only"),
        ("business_id", "", "at least 1"),
        ("business_id", "b" * 65, "at most 64"),
        ("business_id", "acme bakery", "must contain only"),
        ("tenant_id", "", "at least 1"),
        ("tenant_id", "t" * 65, "at most 64"),
        ("message_id", "m" * 257, "at most 256"),
        # customer
        ("customer.wa_id", "123456", "7-15 digits"),
        ("customer.wa_id", "1234567890123456", "7-15 digits"),
        ("customer.wa_id", "+15550123456", "7-15 digits"),
        ("customer.wa_id", "1555012345a", "7-15 digits"),
        ("customer.wa_id", 15550123456, "must be a string"),
        ("customer.name", "n" * 257, "at most 256"),
        ("customer", "15550123456", "must be an object"),
        # message
        ("message.text", "x" * 4097, "at most 4096"),
        ("message.text", 42, "must be a string"),
        ("message.received_at", "2026-11-24T10:30:00", "timezone"),
        ("message.received_at", "yesterday", "ISO-8601"),
        ("message.received_at", 1764000000, "ISO-8601"),
        # intent and confidence
        ("intent", 3, "must be a string"),
        ("intent", None, "must be a string"),
        ("intent", "I" * 65, "at most 64"),
        ("confidence", 1.01, "<= 1.0"),
        ("confidence", -0.01, ">= 0.0"),
        ("confidence", 2, "<= 1.0"),
        ("confidence", "0.9", "must be a number"),
        ("confidence", True, "must be a number"),
        ("confidence", False, "must be a number"),
        ("confidence", None, "must be a number"),
        # entities
        ("entities", [], "must be an object"),
        ("entities.products", {"name": "rye"}, "must be an array"),
        ("entities.products", [{"name": "rye"}] * 51, "at most 50 items"),
        ("entities.products", [{"sku": "SD-01"}], "field required"),
        ("entities.products", [{"name": "rye", "quantity": 0}], ">= 1"),
        ("entities.products", [{"name": "rye", "quantity": 10_001}], "<= 10000"),
        ("entities.products", [{"name": "rye", "quantity": "2"}], "must be an integer"),
        ("entities.products", [{"name": "rye", "quantity": 2.0}], "must be an integer"),
        ("entities.products", [{"name": "rye", "quantity": True}], "must be an integer"),
        ("entities.products", [{"name": "rye", "sku": 1}], "must be a string"),
        ("entities.products", [{"name": "n" * 257}], "at most 256"),
        ("entities.products", [{"name": "rye", "sku": "s" * 65}], "at most 64"),
        ("entities.preferred_time", "2026-11-27T09:00:00", "timezone"),
        ("entities.preferred_time", "friday", "ISO-8601"),
        # time-zone offsets PostgreSQL refuses, or whose seconds the stored payload would lose,
        # and moments that leave the datetime range once converted to UTC
        ("message.received_at", "2026-11-24T10:30:00+16:00", "offset must be whole minutes between -15:59 and +15:59"),
        ("message.received_at", "2026-11-24T10:30:00-16:00", "offset must be whole minutes between -15:59 and +15:59"),
        ("message.received_at", "2026-11-24T10:30:00+23:59", "offset must be whole minutes between -15:59 and +15:59"),
        ("message.received_at", "2026-11-24T10:30:00-23:59:59.999999", "offset must be whole minutes"),
        ("message.received_at", "2026-11-24T10:30:00+05:30:15", "offset must be whole minutes"),
        ("message.received_at", "2026-11-24T10:30:00+01:00:00.5", "offset must be whole minutes"),
        ("message.received_at", "0001-01-01T00:00:00+00:01", "within the years 1-9999 in UTC"),
        ("message.received_at", "9999-12-31T23:59:59-00:01", "within the years 1-9999 in UTC"),
        (
            "entities.preferred_time",
            "2026-11-27T09:00:00+16:00",
            "offset must be whole minutes between -15:59 and +15:59",
        ),
        ("entities.preferred_time", "9999-12-31T20:00:00-15:59", "within the years 1-9999 in UTC"),
        ("entities.severity", "critical", "must be one of"),
        ("entities.order_reference", "r" * 65, "at most 64"),
        ("entities.language", "english!", "BCP-47"),
        ("entities.language", "e", "BCP-47"),
        ("entities.language", "pt_BR", "BCP-47"),
        # ai
        ("ai", "intent-v3", "must be an object"),
        ("ai.model", "m" * 129, "at most 128"),
        ("ai.processing_ms", -1, ">= 0"),
        ("ai.processing_ms", 1.5, "must be an integer"),
        ("ai.processing_ms", "140", "must be an integer"),
        ("ai.processing_ms", True, "must be an integer"),
        ("ai.processing_ms", 86_400_001, "<= 86400000"),
    ],
)
def test_rule_violations_are_invalid_payload(path: str, value: Any, rule: str) -> None:
    error = rejection(encode(with_change(path, value)))

    assert error.reason == "invalid_payload"
    assert any(line.startswith(path) and rule in line for line in error.errors), error.errors
    assert str(error) == "; ".join(error.errors)


def test_error_lines_name_nested_list_positions() -> None:
    products = [{"name": "rye"}, {"name": "rye", "quantity": 0}]

    error = rejection(encode(with_change("entities.products", products)))

    assert error.errors == ["entities.products.1.quantity: must be >= 1"]


def test_example_rules_read_as_documented() -> None:
    assert rejection(encode(with_change("customer.wa_id", "12"))).errors == ["customer.wa_id: must be 7-15 digits"]
    assert rejection(encode(with_change("confidence", 1.5))).errors == ["confidence: must be <= 1.0"]
    assert rejection(encode(with_change("message.text", _MISSING))).errors == ["message.text: field required"]


def test_every_problem_gets_a_line() -> None:
    data = with_change("confidence", 7)
    data["customer"]["wa_id"] = "12"
    del data["lead_id"]

    error = rejection(encode(data))

    assert sorted(line.split(":")[0] for line in error.errors) == ["confidence", "customer.wa_id", "lead_id"]


@pytest.mark.parametrize("raw", ["REFUND_REQUEST", "order_request", ""])
def test_unknown_intent_maps_to_unknown_and_keeps_raw(raw: str) -> None:
    event = parse_event(encode(with_change("intent", raw)))

    assert event.intent is Intent.UNKNOWN
    assert event.intent_raw == raw
    assert to_payload(event)["intent"] == "UNKNOWN"


@pytest.mark.parametrize("intent", [member.value for member in Intent])
def test_every_known_intent_is_kept(intent: str) -> None:
    assert parse_event(encode(with_change("intent", intent))).intent is Intent(intent)


def test_sent_intent_raw_is_ignored() -> None:
    data = with_change("intent", "COMPLAINT")
    data["intent_raw"] = "something else"

    assert parse_event(encode(data)).intent_raw == "COMPLAINT"


def test_unknown_entity_keys_are_kept() -> None:
    data = with_change("entities.sentiment", {"score": -0.4, "label": "annoyed"})
    data["entities"]["dietary"] = ["gluten-free"]

    event = parse_event(encode(data))

    assert event.entities.model_extra == {"sentiment": {"score": -0.4, "label": "annoyed"}, "dietary": ["gluten-free"]}
    assert to_payload(event)["entities"]["sentiment"] == {"score": -0.4, "label": "annoyed"}
    assert to_payload(event)["entities"]["dietary"] == ["gluten-free"]


def test_unknown_top_level_and_nested_keys_are_ignored() -> None:
    data = with_change("routing_hint", {"queue": "fast"})
    data["customer"]["locale"] = "en-GB"
    data["ai"]["temperature"] = 0.2

    payload = to_payload(parse_event(encode(data)))

    assert "routing_hint" not in payload
    assert "locale" not in payload["customer"]
    assert "temperature" not in payload["ai"]


@pytest.mark.parametrize("version", [True, False, "1", 1.0, None, [1]])
def test_schema_version_of_wrong_type_is_invalid(version: Any) -> None:
    error = rejection(encode(with_change("schema_version", version)))

    assert error.reason == "invalid_payload"
    assert error.errors == ["schema_version: must be an integer"]


def test_missing_schema_version_is_invalid() -> None:
    error = rejection(encode(with_change("schema_version", _MISSING)))

    assert error.reason == "invalid_payload"
    assert error.errors == ["schema_version: field required"]


@pytest.mark.parametrize("version", [2, 0, -1])
def test_other_schema_versions_are_unsupported(version: int) -> None:
    error = rejection(encode(with_change("schema_version", version)))

    assert error.reason == "unsupported_schema"
    assert error.errors == [f"schema_version: {version} is not supported (expected 1)"]


def test_unsupported_schema_wins_over_field_errors() -> None:
    """A v2 record is judged on its version alone; its v2 fields may well differ."""
    error = rejection(encode({"schema_version": 2, "something": "new"}))

    assert error.reason == "unsupported_schema"


def test_model_refuses_other_schema_versions_too() -> None:
    """The saga validates the stored payload with the model alone: a v2 payload is refused there too."""
    with pytest.raises(ValueError) as caught:
        AIResultEvent.model_validate(with_change("schema_version", 2))

    assert [(e["loc"], e["msg"]) for e in caught.value.errors()] == [(("schema_version",), "must be 1")]
    assert AIResultEvent.model_validate(with_change("schema_version", 1)).schema_version == 1


@pytest.mark.parametrize("value", [None, b""])
def test_empty_record_is_invalid(value: bytes | None) -> None:
    error = rejection(value)

    assert error.reason == "invalid_payload"
    assert error.errors == ["value: empty record"]


def test_oversized_record_is_invalid() -> None:
    value = encode(with_change("padding", "x" * 307_200))
    assert len(value) > MAX_VALUE_BYTES

    error = rejection(value)

    assert error.reason == "invalid_payload"
    assert error.errors == [f"value: {len(value)} bytes exceeds the 262144-byte limit"]


def test_exactly_300_kib_message_is_reported_with_its_size() -> None:
    assert rejection(b" " * 307_200).errors == ["value: 307200 bytes exceeds the 262144-byte limit"]


def test_record_at_the_limit_is_accepted() -> None:
    value = encode(EXAMPLE)
    value = value[:-1] + b" " * (MAX_VALUE_BYTES - len(value)) + b"}"
    assert len(value) == MAX_VALUE_BYTES

    assert parse_event(value).processing_id == "proc-7f3c2a"


def test_invalid_utf8_is_invalid() -> None:
    error = rejection(b'\xff\xfe{"schema_version": 1}')

    assert error.reason == "invalid_payload"
    assert len(error.errors) == 1
    assert error.errors[0].startswith("value: not valid UTF-8")


@pytest.mark.parametrize("value", [b"{not json", b'{"schema_version": 1,}', b"NaN", b'{"confidence": Infinity}'])
def test_not_json_is_invalid(value: bytes) -> None:
    error = rejection(value)

    assert error.reason == "invalid_payload"
    assert len(error.errors) == 1
    assert error.errors[0].startswith("value: not valid JSON: ")


def test_absurd_nesting_is_invalid() -> None:
    error = rejection(b"[" * 100_000 + b"]" * 100_000)

    assert error.reason == "invalid_payload"
    assert error.errors == ["value: 100000 JSON objects and arrays exceed the limit of 20000"], "before parsing"
    # Under the container limit, nesting deeper than the parser goes is still refused.
    deep = rejection(b'{"a": ' * 15_000 + b"1" + b"}" * 15_000)
    assert deep.reason == "invalid_payload" and deep.errors[0].startswith("value: not valid JSON: ")


@pytest.mark.parametrize(
    "value, kind",
    [
        (b"[1, 2]", "array"),
        (b"[]", "array"),
        (b'"hello"', "string"),
        (b"42", "number"),
        (b"true", "boolean"),
        (b"null", "null"),
    ],
)
def test_json_that_is_not_an_object_is_invalid(value: bytes, kind: str) -> None:
    error = rejection(value)

    assert error.reason == "invalid_payload"
    assert error.errors == [f"value: must be a JSON object, got {kind}"]


def test_bytearray_and_memoryview_are_accepted() -> None:
    assert parse_event(bytearray(encode(EXAMPLE))).lead_id == "lead-123"
    assert parse_event(memoryview(encode(EXAMPLE))).lead_id == "lead-123"


@pytest.mark.parametrize(
    "path, value",
    [
        ("message.text", "before\u0000after"),
        ("customer.name", "Ana\ud800"),
        ("entities.note", "tab\u0000"),
    ],
)
def test_strings_postgres_cannot_store_are_invalid(path: str, value: str) -> None:
    error = rejection(encode(with_change(path, value)))

    assert error.reason == "invalid_payload"
    assert any(line.startswith(path) and "NUL" in line for line in error.errors), error.errors
    assert all("before" not in line and "Ana" not in line for line in error.errors)


def test_deeply_nested_entities_are_invalid() -> None:
    nested: Any = "leaf"
    for _ in range(40):
        nested = {"x": nested}

    error = rejection(encode(with_change("entities.deep", nested)))

    assert error.reason == "invalid_payload"
    assert any("nested deeper than" in line for line in error.errors), error.errors


def test_deep_nesting_in_ignored_keys_is_allowed() -> None:
    nested: Any = "leaf"
    for _ in range(40):
        nested = [nested]

    event = parse_event(encode(with_change("future_field", nested)))

    assert event.processing_id == "proc-7f3c2a"
    assert "future_field" not in to_payload(event)


def test_errors_never_echo_personal_data() -> None:
    wa_id = "+15550123456"
    text = "My secret address is 221B Baker Street " * 120
    name = "Ana Maria de Souza " * 20
    data = with_change("customer.wa_id", wa_id)
    data["customer"]["name"] = name
    data["message"]["text"] = text
    data["message"]["received_at"] = "2026-11-24T10:30:00"

    error = rejection(encode(data))

    assert error.reason == "invalid_payload"
    paths = {line.split(":")[0] for line in error.errors}
    assert paths == {"customer.wa_id", "customer.name", "message.text", "message.received_at"}
    rendered = str(error) + repr(error.errors)
    for secret in (wa_id, "15550123456", "221B Baker", "Ana Maria", "2026-11-24T10:30"):
        assert secret not in rendered


@pytest.mark.parametrize(
    "path, value",
    [
        ("customer.wa_id", ["15550123456"]),
        ("customer.wa_id", {"number": "15550123456"}),
        ("message.text", ["secret text here"]),
        ("customer.name", 15550123456),
    ],
)
def test_type_errors_never_echo_personal_data(path: str, value: Any) -> None:
    error = rejection(encode(with_change(path, value)))

    assert "15550123456" not in str(error)
    assert "secret text" not in str(error)


def test_error_lines_are_capped() -> None:
    products = [{"name": "rye", "quantity": 0}] * 50

    error = rejection(encode(with_change("entities.products", products)))

    assert len(error.errors) == 21
    assert error.errors[-1] == "value: 30 more problems not shown"


def test_contract_error_is_an_exception_with_readable_text() -> None:
    error = ContractError("invalid_payload", ["a: must be x", "b: field required"])

    assert isinstance(error, Exception)
    assert error.reason == "invalid_payload"
    assert str(error) == "a: must be x; b: field required"


def test_contract_error_survives_pickling() -> None:
    error = pickle.loads(
        pickle.dumps(ContractError("unsupported_schema", ["schema_version: 2 is not supported (expected 1)"]))
    )

    assert error.reason == "unsupported_schema"
    assert error.errors == ["schema_version: 2 is not supported (expected 1)"]


def test_overlong_intent_is_reported_once_and_never_echoed() -> None:
    error = rejection(encode(with_change("intent", "REFUND_" + "X" * 100)))

    assert error.reason == "invalid_payload"
    assert error.errors == ["intent: must be at most 64 characters"]


def test_stored_payload_with_a_bad_offset_fails_validation_too() -> None:
    """The saga validates the stored payload again; the same rules hold there."""
    payload = to_payload(parse_event(encode(EXAMPLE)))
    assert AIResultEvent.model_validate(payload).message.received_at.utcoffset() == timedelta(0)
    payload["message"]["received_at"] = "2026-11-24T10:30:00+16:00"

    with pytest.raises(ValueError, match="between -15:59 and \\+15:59") as caught:
        AIResultEvent.model_validate(payload)

    assert [e["loc"] for e in caught.value.errors()] == [("message", "received_at")]


# --- duplicate keys -------------------------------------------------------------------------


def with_raw(fragment: str, replacement: str, data: dict[str, Any] | None = None) -> bytes:
    """The encoded event with one exact piece of its JSON text replaced, for what json.dumps
    cannot write (a repeated key, 1e999, a 5,000-digit integer)."""
    text = json.dumps(EXAMPLE if data is None else data)
    assert text.count(fragment) == 1, fragment
    return text.replace(fragment, replacement).encode("utf-8")


@pytest.mark.parametrize(
    "members",
    [
        '"schema_version": 2, "schema_version": 1',
        '"schema_version": 1, "schema_version": 2',
        '"schema_version": 1, "schema_version": 1',
        '"schema_version": 1, "schema_version": "1"',
    ],
)
def test_repeated_schema_version_is_invalid_payload(members: str) -> None:
    """Which of two versions counts depends on the parser; json keeps the last one silently."""
    error = rejection(with_raw('"schema_version": 1', members))

    assert error.reason == "invalid_payload"
    assert error.errors == ["value: duplicate key 'schema_version'"]


@pytest.mark.parametrize(
    "fragment, replacement, line",
    [
        ('"name": "Ana"', '"name": "Ana", "name": "Mallory Secret"', "customer: duplicate key 'name'"),
        (
            '"processing_id": "proc-7f3c2a"',
            '"processing_id": "proc-7f3c2a", "processing_id": "proc-other"',
            "value: duplicate key 'processing_id'",
        ),
        ('"quantity": 2', '"quantity": 2, "quantity": 9000', "entities.products.0: duplicate key 'quantity'"),
        (
            '"entities": {',
            '"entities": {"note": "first secret", "note": "second secret", ',
            "entities: duplicate key 'note'",
        ),
        (
            '"schema_version": 1',
            '"schema_version": 1, "future": {"a": [{"k": "secret", "k": "secret"}]}',
            "future.a.0: duplicate key 'k'",
        ),
    ],
)
def test_duplicate_keys_anywhere_are_invalid(fragment: str, replacement: str, line: str) -> None:
    error = rejection(with_raw(fragment, replacement))

    assert error.reason == "invalid_payload"
    assert error.errors == [line]
    assert "secret" not in str(error).lower() and "Mallory" not in str(error)


def test_duplicate_keys_are_invalid_even_in_another_schema_version() -> None:
    error = rejection(b'{"schema_version": 2, "lead_id": "a", "lead_id": "b"}')

    assert error.reason == "invalid_payload"
    assert error.errors == ["value: duplicate key 'lead_id'"]


def test_a_long_or_unstorable_duplicate_key_is_shown_short_and_escaped() -> None:
    long_key = "k" * 10_000
    raw = with_raw(
        '"schema_version": 1',
        f'"schema_version": 1, "x": {{"{long_key}": 1, "{long_key}": 2, '
        r'"bad\u0000\ud800": 1, "bad\u0000\ud800": 2}',
    )

    error = rejection(raw)

    assert error.reason == "invalid_payload"
    assert sorted(error.errors) == sorted(
        [
            f"x: duplicate key '{'k' * 64}'...",
            "x: duplicate key 'bad\\x00\\ud800'",
        ]
    )
    assert all(line.encode("utf-8") and "\x00" not in line for line in error.errors)


# --- numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fragment, replacement, line",
    [
        ('"confidence": 0.95', '"confidence": 1e999', "confidence: number out of range (must be finite)"),
        ('"confidence": 0.95', '"confidence": -1e999', "confidence: number out of range (must be finite)"),
        ('"processing_ms": 140', '"processing_ms": 1E400', "ai.processing_ms: number out of range (must be finite)"),
        ('"quantity": 2', '"quantity": 1e999', "entities.products.0.quantity: number out of range (must be finite)"),
        (
            '"entities": {',
            '"entities": {"sentiment": {"score": [0.5, -2e308]}, ',
            "entities.sentiment.score.1: number out of range (must be finite)",
        ),
        ('"schema_version": 1', '"schema_version": 1, "future": 1e999', "future: number out of range (must be finite)"),
        ('"quantity": 2', '"quantity": ' + "9" * 4301, "entities.products.0.quantity: integer longer than 4300 digits"),
        ('"entities": {', '"entities": {"big": -' + "1" * 4301 + ", ", "entities.big: integer longer than 4300 digits"),
        ('"schema_version": 1', '"schema_version": ' + "1" * 5000, "schema_version: integer longer than 4300 digits"),
    ],
)
def test_numbers_that_cannot_be_kept_as_sent_are_invalid(fragment: str, replacement: str, line: str) -> None:
    """1e999 parses to infinity, which jsonb cannot hold and the JSON encoder would write as
    null or refuse; an integer past Python's conversion limit cannot be read (or written back)."""
    error = rejection(with_raw(fragment, replacement))

    assert error.reason == "invalid_payload"
    assert error.errors == [line]


def test_numbers_at_the_edges_are_kept_exactly() -> None:
    big = int("7" * 4300)
    data = with_change("entities.measures", [1.7976931348623157e308, 5e-324, -0.0, big, -big])

    event = parse_event(encode(data))

    assert to_payload(event)["entities"]["measures"] == [1.7976931348623157e308, 5e-324, -0.0, big, -big]


def test_a_huge_unsupported_schema_version_is_reported_short() -> None:
    error = rejection(encode(with_change("schema_version", 10**1000)))

    assert error.reason == "unsupported_schema"
    assert len(error.errors) == 1 and len(error.errors[0]) <= 300


# --- unknown entity keys --------------------------------------------------------------------


def test_unknown_entity_keys_at_their_limits_are_kept() -> None:
    extra = {f"{index:02d}" + "k" * 62: {"k" * 64: index} for index in range(32 - 1)}
    data = with_change("entities.products", [{"name": "rye"}])
    data["entities"].update(extra)

    event = parse_event(encode(data))

    assert event.entities.model_extra == extra


@pytest.mark.parametrize(
    "entities, line",
    [
        ({"note": 1, "k" * 65: 2}, "entities: key 2 is longer than 64 characters"),
        ({"sentiment": {"label": "sad", "k" * 65: 2}}, "entities.sentiment: key 2 is longer than 64 characters"),
        ({"sentiment": [{"k" * 65: "x"}]}, "entities.sentiment.0: key 1 is longer than 64 characters"),
        ({f"key{index}": index for index in range(33)}, "entities: must have at most 32 keys"),
        ({"bad\u0000": 1}, "entities: key 1 contains a NUL character or an unpaired surrogate"),
    ],
)
def test_unknown_entity_keys_are_bounded(entities: dict[str, Any], line: str) -> None:
    error = rejection(encode(with_change("entities", entities)))

    assert error.reason == "invalid_payload"
    assert error.errors == [line]


def test_unknown_keys_that_are_dropped_are_not_bounded() -> None:
    data = with_change("entities.products", [{"name": "rye", "k" * 100: 1}])
    data["k" * 100] = {"k" * 100: 1}

    event = parse_event(encode(data))

    assert event.entities.products[0].name == "rye"
    assert "k" * 100 not in to_payload(event)


# --- what the contract accepts, Postgres stores ---------------------------------------------
# The inbox row is written by ingest's own insert, the lead's last_inbound_at and a callback's
# preferred_time through the real models, so a rule loosened past what a column takes fails here,
# not in production.

LONGEST = 64 * "b"
OFFSET_MAX = timezone(timedelta(hours=15, minutes=59))
OFFSET_MIN = timezone(-timedelta(hours=15, minutes=59))


def store_and_reload(raw: bytes) -> AIResultEvent:
    """Take the record in as ingest does and read it back as the saga does."""
    event = parse_event(raw)
    record = Record("ai.process.result", 0, 7, raw)
    assert insert_inbox_rows([inbox_values(record, event, "0" * 32)]) == {record.coordinates}
    return load_event(ProcessedMessage.objects.get(processing_id=event.processing_id))


@pytest.mark.django_db
def test_the_longest_accepted_event_is_stored_and_reads_back_equal() -> None:
    business = Business.objects.create(business_id=LONGEST, tenant_id="t" * 64, display_name="Edge")
    extras = {f"{index:02d}" + "k" * 62: {"k" * 64: "\x01\t\u200b"} for index in range(24)}
    extras["measures"] = [1.7976931348623157e308, 5e-324]
    extras["counts"] = [int("9" * 4300), -int("9" * 4300)]
    extras["deep"] = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[["leaf"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
    data = {
        **EXAMPLE,
        "processing_id": "p" * 128,
        "lead_id": "l" * 64,
        "business_id": LONGEST,
        "tenant_id": "t" * 64,
        "message_id": "m" * 256,
        "customer": {"wa_id": "9" * 15, "name": "n" * 256},
        "message": {"text": "x" * 4096, "received_at": now_iso()},
        "intent": "I" * 64,
        "confidence": 1,
        "ai": {"model": "m" * 128, "processing_ms": 86_400_000},
        "entities": {
            "products": [{"sku": "s" * 64, "name": "n" * 256, "quantity": 10_000}] * 50,
            "preferred_time": later_iso(),
            "severity": "high",
            "order_reference": "r" * 64,
            "language": "en" + "-abcdefgh" * 3 + "-abcde",
            **extras,
        },
    }
    assert len(data["entities"]) == 32 and len(data["entities"]["language"]) == 35

    event = to_payload(parse_event(encode(data)))
    stored = store_and_reload(encode(data))

    # jsonb keeps numbers as decimals, so the largest float comes back as an integer of equal value.
    measures = stored.entities.model_extra.pop("measures")
    assert [float(number) for number in measures] == event["entities"].pop("measures")
    assert to_payload(stored) == event
    assert stored.intent is Intent.UNKNOWN and stored.intent_raw == "I" * 64
    lead = upsert_lead(stored, business)
    lead.refresh_from_db()
    # Leads get opaque ids; the upstream's 64-character id is the lead's alias.
    assert (lead.customer_name, lead.wa_id) == ("n" * 256, "9" * 15)
    assert lead.lead_id.startswith("ld.") and lead.aliases.get().alias == "l" * 64


EDGE_MOMENTS = {
    "year 1 in UTC": "0001-01-01T00:00:00+00:00",
    "year 1 at -15:59": "0001-01-01T00:00:00-15:59",
    "end of 9999 in UTC": "9999-12-31T23:59:59.999999+00:00",
    "end of 9999 at +15:59": "9999-12-31T23:59:59.999999+15:59",
    "now at +15:59": datetime.now(OFFSET_MAX).isoformat(),
    "now at -15:59": datetime.now(OFFSET_MIN).isoformat(),
}


@pytest.mark.django_db
@pytest.mark.parametrize("moment", EDGE_MOMENTS.values(), ids=EDGE_MOMENTS.keys())
def test_accepted_times_at_the_edges_are_stored_and_compared(moment: str) -> None:
    business = Business.objects.create(business_id="acme-bakery", tenant_id="tenant-acme", display_name="Acme")
    data = with_change("message.received_at", moment)
    data["intent"] = "SCHEDULE_CALL"
    data["entities"] = {"preferred_time": moment}
    expected = datetime.fromisoformat(moment)

    event = store_and_reload(encode(data))
    upsert_lead(event, business)
    lead = upsert_lead(event, business)  # compares with the value read back from Postgres
    action = plan(MessageContext(event=event, business=business, lead=lead, catalog={})).actions[0]
    ScheduleCall().execute(
        ActionContext(
            processing_id=event.processing_id,
            saga_run=1,
            action=action.name,
            step_order=1,
            params=action.params,
            event=event,
            business=business,
            lead=lead,
        )
    )

    assert event.message.received_at == expected and event.entities.preferred_time == expected
    assert Lead.objects.get(pk=lead.pk).last_inbound_at == expected
    assert CallbackRequest.objects.get(lead=lead).preferred_time == expected


@pytest.mark.django_db
@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 24, 10, 30, tzinfo=timezone(timedelta(hours=16))),
        datetime(2026, 11, 24, 10, 30, tzinfo=timezone(-timedelta(hours=16))),
        datetime(9999, 12, 31, 23, 59, tzinfo=timezone(-timedelta(minutes=1))),
    ],
    ids=["+16:00", "-16:00", "past 9999 in UTC"],
)
def test_postgres_refuses_the_times_the_contract_refuses(moment: datetime) -> None:
    """Why the bounds are where they are: just past them, storing or reading back fails."""
    business = Business.objects.create(business_id="acme-bakery", tenant_id="tenant-acme", display_name="Acme")
    lead = Lead.objects.create(lead_id="lead-123", business=business, wa_id="15550123456")

    with pytest.raises(DataError), transaction.atomic():
        Lead.objects.filter(pk=lead.pk).update(last_inbound_at=moment)
        Lead.objects.get(pk=lead.pk)
    assert rejection(encode(with_change("message.received_at", moment.isoformat()))).reason == "invalid_payload"
