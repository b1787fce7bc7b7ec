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
    assert (text.type, text.text, text.customer.wa_id, text.customer.name) == (
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
    assert parsed.statuses == {} and parsed.unreadable == []
    assert [(c.field, c.problems) for c in parsed.changes] == [("messages", [])]


def test_statuses_are_grouped_by_the_number_they_came_for_and_other_fields_are_kept_with_their_value():
    delivery = meta.status_delivery(meta.status("wamid.A", "delivered"), meta.status("wamid.A", "read"))
    delivery["entry"].append(
        {"id": meta.WABA_ID, "changes": [{"field": "account_update", "value": {"event": "VERIFIED_ACCOUNT"}}]}
    )
    parsed = parse_delivery(meta.encode(delivery))
    assert parsed.messages == []
    assert [s["status"] for s in parsed.statuses[meta.PHONE_NUMBER_ID]] == ["delivered", "read"]
    assert parsed.status_count == 2
    account = parsed.changes[-1]
    assert (account.field, account.waba_id, account.value) == (
        "account_update",
        meta.WABA_ID,
        {"event": "VERIFIED_ACCOUNT"},
    )


def test_text_that_postgres_cannot_hold_is_replaced_not_refused():
    parsed = parse_delivery(json.dumps(meta.message_delivery(meta.text_message("a\u0000b\ud800c"))).encode())
    assert parsed.messages[0].text == "a\ufffdb?c"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "body is not JSON"),
        (b"\xff\xfe{}", "body is not UTF-8"),
    ],
)
def test_only_a_body_that_is_not_utf8_json_is_refused(body: bytes, reason: str):
    with pytest.raises(MalformedDelivery, match="^" + reason.replace("(", r"\(")):
        parse_delivery(body)


@pytest.mark.parametrize(
    ("body", "path", "reason"),
    [
        (b"[1, 2]", "object", "body must be an object, got list"),
        (json.dumps({"object": "page", "entry": []}).encode(), "object", "object must be 'whatsapp_business_account'"),
        (json.dumps({"object": "whatsapp_business_account"}).encode(), "entry", "entry must be a list, got null"),
    ],
)
def test_json_of_the_wrong_shape_is_kept_as_an_unreadable_change(body: bytes, path: str, reason: str):
    (change,) = parse_delivery(body).changes
    assert (change.path, change.problems) == (path, [reason])


def test_an_unreadable_message_costs_only_itself_and_the_reason_never_quotes_the_customer():
    secret_text = "my card number is 4111"
    broken = meta.text_message(secret_text)
    broken["timestamp"] = secret_text
    missing_id = meta.text_message("hello")
    del missing_id["id"]
    parsed = parse_delivery(meta.encode(meta.message_delivery(meta.text_message("fine"), broken, missing_id)))
    assert [m.text for m in parsed.messages] == ["fine"]
    assert [(u.path, u.reason, u.wamid) for u in parsed.unreadable] == [
        (
            "entry[0].changes[0].value.messages[1]",
            "entry[0].changes[0].value.messages[1].timestamp must be unix seconds as a string",
            broken["id"],
        ),
        (
            "entry[0].changes[0].value.messages[2]",
            "entry[0].changes[0].value.messages[2].id must be a non-empty string, got null",
            "",
        ),
    ]
    assert secret_text not in repr(parsed.unreadable)
    no_metadata = meta.message_delivery(meta.text_message("hello"))
    del no_metadata["entry"][0]["changes"][0]["value"]["metadata"]
    (unroutable,) = parse_delivery(meta.encode(no_metadata)).unreadable
    assert unroutable.reason.endswith("metadata.phone_number_id is missing: the message cannot be routed")


def test_an_interactive_message_without_a_reply_is_unreadable_and_meta_errors_are_noted():
    empty = meta.interactive_message("x")
    empty["interactive"] = {"type": "button_reply"}
    delivery = meta.message_delivery(meta.text_message("one"), empty, meta.text_message("three"))
    delivery["entry"][0]["changes"][0]["value"]["errors"] = [{"code": 131051, "title": "Unsupported message type"}]
    parsed = parse_delivery(meta.encode(delivery))
    assert [m.text for m in parsed.messages] == ["one", "three"]
    assert parsed.unreadable[0].reason.endswith("interactive has no button_reply, list_reply or nfm_reply")
    assert parsed.changes[0].problems == ["entry[0].changes[0].value.errors: Meta reported error(s) 131051"]


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
