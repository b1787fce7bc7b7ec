"""Meta's webhook payload, read into what we keep.

    {"object": "whatsapp_business_account",
     "entry": [{"id": "<WABA id>", "changes": [{"field": "messages", "value": {
         "messaging_product": "whatsapp",
         "metadata": {"display_phone_number": "...", "phone_number_id": "..."},
         "contacts": [{"profile": {"name": "..."}, "wa_id": "..."}],
         "messages": [{"from": "...", "id": "wamid...", "timestamp": "<unix seconds>", "type": "text",
                       "text": {"body": "..."}}],
         "statuses": [{"id": "wamid...", "status": "delivered", "timestamp": "...", ...}]}}]}]}

A delivery whose shape is wrong anywhere is refused whole (MalformedDelivery), so nothing of
it is half-stored. The reasons name where the problem is, never what the customer wrote: they
are logged. Message types we do not read (location, contacts, reaction, ...) are kept with
their type and whatever text they carry; a consumer decides what it understands.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

_OBJECT = "whatsapp_business_account"
_MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")


class MalformedDelivery(ValueError):
    """The body is not a webhook delivery we can read; the reason is safe to log."""


@dataclass(frozen=True)
class Media:
    id: str
    mime_type: str = ""
    caption: str = ""
    filename: str = ""


@dataclass(frozen=True)
class InboundItem:
    wamid: str
    phone_number_id: str
    wa_id: str
    profile_name: str
    type: str
    text: str
    received_at: datetime
    media: Media | None = None


@dataclass
class Delivery:
    messages: list[InboundItem] = field(default_factory=list)
    # The status notifications of each phone-number id, as Meta sent them.
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Changes of fields other than "messages" (account updates, template statuses, ...).
    ignored_changes: int = 0

    @property
    def status_count(self) -> int:
        return sum(len(items) for items in self.statuses.values())


def parse_delivery(body: bytes) -> Delivery:
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MalformedDelivery(f"body is not UTF-8 (at byte {exc.start})") from None
    except (ValueError, RecursionError) as exc:
        raise MalformedDelivery(
            f"body is not JSON ({type(exc).__name__} at position {getattr(exc, 'pos', '?')})"
        ) from None
    if not isinstance(data, dict):
        raise MalformedDelivery(f"body must be a JSON object, got {_kind(data)}")
    if data.get("object") != _OBJECT:
        raise MalformedDelivery(f"object must be {_OBJECT!r}")
    delivery = Delivery()
    for e, entry in enumerate(_list(data, "entry", "")):
        where = f"entry[{e}]"
        entry = _object(entry, where)
        for c, change in enumerate(_list(entry, "changes", where)):
            _read_change(_object(change, f"{where}.changes[{c}]"), f"{where}.changes[{c}]", delivery)
    return delivery


def _read_change(change: dict[str, Any], where: str, delivery: Delivery) -> None:
    if change.get("field") != "messages":
        delivery.ignored_changes += 1
        return
    value = _object(change.get("value"), f"{where}.value")
    where = f"{where}.value"
    messages = _list(value, "messages", where, required=False)
    statuses = _list(value, "statuses", where, required=False)
    if not messages and not statuses:
        return
    metadata = _object(value.get("metadata"), f"{where}.metadata")
    phone_number_id = _string(metadata, "phone_number_id", f"{where}.metadata", max_chars=64)
    names: dict[str, str] = {}
    for i, contact in enumerate(_list(value, "contacts", where, required=False)):
        contact = _object(contact, f"{where}.contacts[{i}]")
        profile = contact.get("profile")
        name = profile.get("name") if isinstance(profile, dict) else None
        wa_id = contact.get("wa_id")
        if isinstance(wa_id, str) and isinstance(name, str):
            names[wa_id] = _storable(name)
    for i, message in enumerate(messages):
        delivery.messages.append(
            _read_message(_object(message, f"{where}.messages[{i}]"), f"{where}.messages[{i}]", phone_number_id, names)
        )
    for i, status in enumerate(statuses):
        delivery.statuses.setdefault(phone_number_id, []).append(_object(status, f"{where}.statuses[{i}]"))


def _read_message(message: dict[str, Any], where: str, phone_number_id: str, names: dict[str, str]) -> InboundItem:
    wamid = _string(message, "id", where)
    wa_id = _string(message, "from", where, max_chars=32)
    kind = _string(message, "type", where, max_chars=32)
    received_at = _timestamp(message, where)
    text, media = "", None
    body = message.get(kind)
    if kind == "text":
        text = _optional_string(_object(body, f"{where}.text"), "body", f"{where}.text")
    elif kind == "button":
        text = _optional_string(_object(body, f"{where}.button"), "text", f"{where}.button")
    elif kind == "interactive":
        interactive = _object(body, f"{where}.interactive")
        for reply_kind in ("button_reply", "list_reply"):
            reply = interactive.get(reply_kind)
            if isinstance(reply, dict):
                text = _optional_string(reply, "title", f"{where}.interactive.{reply_kind}")
                break
    elif kind in _MEDIA_TYPES:
        item = _object(body, f"{where}.{kind}")
        media = Media(
            id=_string(item, "id", f"{where}.{kind}"),
            mime_type=_optional_string(item, "mime_type", f"{where}.{kind}"),
            caption=_optional_string(item, "caption", f"{where}.{kind}"),
            filename=_optional_string(item, "filename", f"{where}.{kind}"),
        )
        text = media.caption
    elif kind == "reaction" and isinstance(body, dict):
        emoji = body.get("emoji")
        text = _storable(emoji) if isinstance(emoji, str) else ""
    return InboundItem(
        wamid=wamid,
        phone_number_id=phone_number_id,
        wa_id=wa_id,
        profile_name=names.get(wa_id, ""),
        type=kind,
        text=text,
        received_at=received_at,
        media=media,
    )


def _timestamp(message: dict[str, Any], where: str) -> datetime:
    raw = message.get("timestamp")
    if isinstance(raw, str) and raw.isascii() and raw.isdigit():
        seconds = int(raw)
    elif isinstance(raw, int) and not isinstance(raw, bool):
        seconds = raw
    else:
        raise MalformedDelivery(f"{where}.timestamp must be unix seconds as a string")
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise MalformedDelivery(f"{where}.timestamp is out of range") from None


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedDelivery(f"{where or 'body'} must be an object, got {_kind(value)}")
    return value


def _list(container: dict[str, Any], key: str, where: str, *, required: bool = True) -> list[Any]:
    value = container.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise MalformedDelivery(f"{_path(where, key)} must be a list, got {_kind(value)}")
    return value


def _string(container: dict[str, Any], key: str, where: str, *, max_chars: int = 256) -> str:
    """An id: present, a string, and no longer than the column that keeps it."""
    value = container.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedDelivery(f"{_path(where, key)} must be a non-empty string, got {_kind(value)}")
    if len(value) > max_chars:
        raise MalformedDelivery(f"{_path(where, key)} is longer than {max_chars} characters")
    return _storable(value)


def _optional_string(container: dict[str, Any], key: str, where: str) -> str:
    value = container.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedDelivery(f"{_path(where, key)} must be a string, got {_kind(value)}")
    return _storable(value)


def _storable(value: str) -> str:
    """Text Postgres can hold: JSON may carry a NUL or a lone surrogate (\\u0000, \\ud800),
    which a text column refuses; each becomes U+FFFD rather than failing the delivery."""
    if value.isascii() and "\x00" not in value:
        return value
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _kind(value: Any) -> str:
    """The JSON type of a value, for a reason that never quotes the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string" if value else "empty string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
