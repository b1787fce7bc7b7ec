"""The v1 request contract: what the relay publishes and the classifier accepts."""

import json
from datetime import UTC, datetime

import pytest

from whatsapp.contracts.request import parse_request, processing_id_for, to_request_payload
from whatsapp.contracts.result import ContractError


def _request(**changes: object) -> dict:
    wamid = "wamid.HBgLMTU1NTAxMjM0NTY3FQIAEhgg+/=="
    event = {
        "schema_version": 1,
        "processing_id": processing_id_for(wamid),
        "business_id": "acme-bakery",
        "tenant_id": "tenant-acme",
        "lead_id": "ld.0123456789abcdef0123",
        "customer": {"wa_id": "15550123456", "name": "Ana"},
        "message": {
            "id": wamid,
            "type": "text",
            "text": "Quero 2 pães 🍞",
            "received_at": datetime.now(UTC).isoformat(),
        },
    }
    event.update(changes)
    return event


def test_a_request_round_trips_with_its_text_and_derived_ids() -> None:
    event = parse_request(json.dumps(_request()).encode())
    payload = to_request_payload(event)
    assert payload["message"]["text"] == "Quero 2 pães 🍞"
    assert payload["lead_id"] == "ld.0123456789abcdef0123"
    assert payload["processing_id"].startswith("wa.") and "=" not in payload["processing_id"]


def test_the_processing_id_is_the_same_for_the_same_message_and_differs_for_another() -> None:
    assert processing_id_for("wamid.A") == processing_id_for("wamid.A")
    assert processing_id_for("wamid.A") != processing_id_for("wamid.B")


def test_a_media_message_carries_its_media_and_caption() -> None:
    message = {
        **_request()["message"],
        "type": "image",
        "text": "this one",
        "media": {"id": "m1", "mime_type": "image/jpeg", "caption": "this one"},
    }
    event = parse_request(json.dumps(_request(message=message)).encode())
    assert event.message.media is not None and event.message.media.mime_type == "image/jpeg"


@pytest.mark.parametrize(
    ("value", "reason", "line"),
    [
        (b"", "invalid_payload", "value: empty record"),
        (b"[1]", "invalid_payload", "value: must be a JSON object, got array"),
        (json.dumps(_request(schema_version=2)).encode(), "unsupported_schema", "schema_version: must be 1"),
        (
            json.dumps(_request(customer={"wa_id": "+1555"})).encode(),
            "invalid_payload",
            "customer.wa_id: must be 7-15 digits",
        ),
        (json.dumps(_request(tenant_id=None)).encode(), "invalid_payload", "tenant_id:"),
        (b'{"schema_version": 1, "schema_version": 1}', "invalid_payload", "duplicate key 'schema_version'"),
    ],
)
def test_a_bad_request_is_refused_with_the_field_and_rule_named(value: bytes, reason: str, line: str) -> None:
    with pytest.raises(ContractError) as refused:
        parse_request(value)
    assert refused.value.reason == reason
    assert line in str(refused.value)
    assert "Ana" not in str(refused.value)
