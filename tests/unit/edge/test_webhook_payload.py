"""Reading Meta's webhook payload and checking its signature, with the shapes Meta sends."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from tests.support import meta
from whatsapp.edge.webhook.payload import MalformedDelivery, parse_delivery
from whatsapp.edge.webhook.signature import expected_signature, signature_valid, token_matches


def test_each_message_type_carries_its_text_and_media():
    sent = int(time.time()) - 30
    delivery = meta.message_delivery(
        meta.text_message("Quiero 2 panes 🍞", ts=str(sent)),
        meta.button_message("Yes, confirm"),
        meta.interactive_message("Large box", kind="list_reply"),
        meta.image_message(caption="is this in stock?"),
        name="Ana Souza",
    )
    parsed = parse_delivery(meta.encode(delivery))
    text, button, interactive, image = parsed.messages
    assert (text.type, text.text, text.wa_id, text.profile_name) == (
        "text",
        "Quiero 2 panes 🍞",
        meta.CUSTOMER,
        "Ana Souza",
    )
    assert text.received_at == datetime.fromtimestamp(sent, UTC) and text.received_at.tzinfo is not None
    assert text.phone_number_id == meta.PHONE_NUMBER_ID
    assert (button.type, button.text) == ("button", "Yes, confirm")
    assert (interactive.type, interactive.text) == ("interactive", "Large box")
    assert image.type == "image" and image.text == "is this in stock?"
    assert image.media is not None
    assert (image.media.id, image.media.mime_type, image.media.caption) == (
        "1479537139650973",
        "image/jpeg",
        "is this in stock?",
    )
    assert parsed.statuses == {} and parsed.ignored_changes == 0


def test_statuses_are_grouped_by_the_number_they_came_for_and_other_fields_are_ignored():
    delivery = meta.status_delivery(meta.status("wamid.A", "delivered"), meta.status("wamid.A", "read"))
    delivery["entry"].append(
        {"id": meta.WABA_ID, "changes": [{"field": "account_update", "value": {"event": "VERIFIED_ACCOUNT"}}]}
    )
    parsed = parse_delivery(meta.encode(delivery))
    assert parsed.messages == []
    assert [s["status"] for s in parsed.statuses[meta.PHONE_NUMBER_ID]] == ["delivered", "read"]
    assert parsed.status_count == 2 and parsed.ignored_changes == 1


def test_text_that_postgres_cannot_hold_is_replaced_not_refused():
    parsed = parse_delivery(json.dumps(meta.message_delivery(meta.text_message("a\u0000b\ud800c"))).encode())
    assert parsed.messages[0].text == "a\ufffdb?c"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "body is not JSON"),
        (b"\xff\xfe{}", "body is not UTF-8"),
        (b"[1, 2]", "body must be a JSON object, got list"),
        (json.dumps({"object": "page", "entry": []}).encode(), "object must be 'whatsapp_business_account'"),
        (json.dumps({"object": "whatsapp_business_account"}).encode(), "entry must be a list, got null"),
    ],
)
def test_a_body_we_cannot_read_is_refused_with_a_reason(body: bytes, reason: str):
    with pytest.raises(MalformedDelivery, match="^" + reason.replace("(", r"\(")):
        parse_delivery(body)


def test_a_malformed_message_refuses_the_delivery_and_the_reason_never_quotes_the_customer():
    secret_text = "my card number is 4111"
    broken = meta.text_message(secret_text)
    broken["timestamp"] = secret_text
    with pytest.raises(MalformedDelivery) as raised:
        parse_delivery(meta.encode(meta.message_delivery(meta.text_message("fine"), broken)))
    assert str(raised.value) == "entry[0].changes[0].value.messages[1].timestamp must be unix seconds as a string"
    missing_id = meta.text_message("hello")
    del missing_id["id"]
    with pytest.raises(MalformedDelivery, match=r"messages\[0\]\.id must be a non-empty string, got null"):
        parse_delivery(meta.encode(meta.message_delivery(missing_id)))
    no_metadata = meta.message_delivery(meta.text_message("hello"))
    del no_metadata["entry"][0]["changes"][0]["value"]["metadata"]
    with pytest.raises(MalformedDelivery, match=r"value\.metadata must be an object, got null"):
        parse_delivery(meta.encode(no_metadata))


def test_the_signature_is_over_the_raw_bytes_including_non_ascii():
    raw = meta.encode(meta.message_delivery(meta.text_message("مرحبا 👋 café")))
    assert "مرحبا".encode() in raw, "raw UTF-8, as Meta may send it"
    header = meta.sign(raw)
    assert header == expected_signature(raw, meta.APP_SECRET)
    assert signature_valid(raw, header, meta.APP_SECRET)
    assert signature_valid(raw, header.upper().replace("SHA256=", "sha256="), meta.APP_SECRET)
    # The same JSON serialised differently (escaped) is other bytes: its signature differs.
    escaped = meta.encode(json.loads(raw), ascii_only=True)
    assert escaped != raw and not signature_valid(escaped, header, meta.APP_SECRET)
    assert not signature_valid(raw, meta.sign(raw, "another-secret"), meta.APP_SECRET)
    assert not signature_valid(raw, header[len("sha256=") :], meta.APP_SECRET)
    assert not signature_valid(raw, None, meta.APP_SECRET)
    assert not signature_valid(raw, "sha256=é" + header[8:], meta.APP_SECRET)
    assert not signature_valid(raw + b" ", header, meta.APP_SECRET)


def test_the_verify_token_must_match_exactly():
    assert token_matches(meta.VERIFY_TOKEN, meta.VERIFY_TOKEN)
    assert not token_matches(meta.VERIFY_TOKEN + "x", meta.VERIFY_TOKEN)
    assert not token_matches("", meta.VERIFY_TOKEN)
    assert not token_matches(None, meta.VERIFY_TOKEN)
    assert not token_matches("anything", None)
    assert not token_matches("ü", meta.VERIFY_TOKEN)
