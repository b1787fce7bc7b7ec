"""Meta's Cloud API webhook deliveries, as Meta sends them, for the demo, `make send` and the tests.

The shapes follow Meta's webhook reference (object whatsapp_business_account, entry[].changes[]
with field "messages" and a value holding metadata, contacts, messages or statuses). Bodies
are serialised once, with raw UTF-8 (ensure_ascii=False) unless told otherwise, and signed
over exactly those bytes, as Meta does (X-Hub-Signature-256: sha256=<hex>).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

APP_SECRET = "test-app-secret-0123456789abcdef"
VERIFY_TOKEN = "test-verify-token-5f1c2a"
PHONE_NUMBER_ID = "106540352242922"
DISPLAY_NUMBER = "15550783881"
WABA_ID = "102290129340398"
CUSTOMER = "15551234567"


def wamid() -> str:
    """A fresh message id shaped like Meta's (base64 of a few ids, with '=' padding)."""
    return "wamid.HBgL" + uuid.uuid4().hex.upper() + "AA=="


def now_ts(offset_seconds: int = 0) -> str:
    return str(int(time.time()) + offset_seconds)


def text_message(body: str, *, id: str | None = None, sender: str = CUSTOMER, ts: str | None = None) -> dict:
    return {"from": sender, "id": id or wamid(), "timestamp": ts or now_ts(), "type": "text", "text": {"body": body}}


def image_message(
    *, caption: str = "", media_id: str = "1479537139650973", id: str | None = None, sender: str = CUSTOMER
) -> dict:
    image: dict[str, Any] = {"id": media_id, "mime_type": "image/jpeg", "sha256": "a" * 64}
    if caption:
        image["caption"] = caption
    return {"from": sender, "id": id or wamid(), "timestamp": now_ts(), "type": "image", "image": image}


def button_message(text: str, *, payload: str = "btn", id: str | None = None, sender: str = CUSTOMER) -> dict:
    return {
        "from": sender,
        "id": id or wamid(),
        "timestamp": now_ts(),
        "type": "button",
        "button": {"text": text, "payload": payload},
        "context": {"from": DISPLAY_NUMBER, "id": wamid()},
    }


def interactive_message(
    title: str, *, kind: str = "button_reply", id: str | None = None, sender: str = CUSTOMER
) -> dict:
    return {
        "from": sender,
        "id": id or wamid(),
        "timestamp": now_ts(),
        "type": "interactive",
        "interactive": {"type": kind, kind: {"id": "opt-1", "title": title}},
    }


def status(wamid_: str, status_: str, *, recipient: str = CUSTOMER, ts: str | None = None, **extra: Any) -> dict:
    """One status notification (sent, delivered, read, failed). For failed pass
    errors=[{"code": 131047, "title": "Re-engagement message", ...}]."""
    item = {"id": wamid_, "status": status_, "timestamp": ts or now_ts(), "recipient_id": recipient}
    item.update(extra)
    return item


def _delivery(value: dict) -> dict:
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": [{"field": "messages", "value": value}]}],
    }


def message_delivery(
    *messages: dict, phone_number_id: str = PHONE_NUMBER_ID, name: str = "Ana Souza", wa_id: str | None = None
) -> dict:
    """A delivery of inbound messages, with the contact card Meta adds for their sender."""
    sender = wa_id or (messages[0].get("from", CUSTOMER) if messages else CUSTOMER)
    return _delivery(
        {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": phone_number_id},
            "contacts": [{"profile": {"name": name}, "wa_id": sender}],
            "messages": list(messages),
        }
    )


def status_delivery(*statuses: dict, phone_number_id: str = PHONE_NUMBER_ID) -> dict:
    return _delivery(
        {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": phone_number_id},
            "statuses": list(statuses),
        }
    )


def encode(delivery: dict, *, ascii_only: bool = False) -> bytes:
    return json.dumps(delivery, ensure_ascii=ascii_only).encode("utf-8")


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    """The X-Hub-Signature-256 header Meta sends for these exact bytes."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def signed_headers(body: bytes, secret: str = APP_SECRET) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, secret)}
