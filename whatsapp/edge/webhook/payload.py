"""Meta's webhook delivery, read item by item into what we keep.

    {"object": "whatsapp_business_account",
     "entry": [{"id": "<WABA id>", "changes": [{"field": "messages", "value": {
         "messaging_product": "whatsapp",
         "metadata": {"display_phone_number": "...", "phone_number_id": "..."},
         "contacts": [{"profile": {"name": "...", "username": "..."}, "wa_id": "...", "user_id": "US.…"}],
         "messages": [{"from": "...", "id": "wamid...", "timestamp": "<unix seconds>", "type": "text",
                       "text": {"body": "..."}}],
         "statuses": [{"id": "wamid...", "status": "delivered", "timestamp": "...", ...}]}}]}]}

Once the signature checked, a delivery is never refused for what it holds: Meta would
retry it and then drop it, losing every item with the one we could not read. Only a body
that is not UTF-8 JSON is refused (MalformedDelivery). Each change is kept with its field
(`changes`); each message we can read is a message, each we cannot is an unreadable item
with its JSON path and the reason, and the rest of the delivery goes on. Reasons name where
a problem is, never what the customer wrote.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from whatsapp.edge.webhook.messages import InboundItem, read_contacts, read_message
from whatsapp.edge.webhook.reading import Unreadable, kind_of, list_at, object_at, optional_id, read_list

_OBJECT = "whatsapp_business_account"
MESSAGES = "messages"


class MalformedDelivery(ValueError):
    """The body is not JSON we can read at all; the reason is safe to log."""


@dataclass(frozen=True)
class UnreadableItem:
    path: str
    reason: str
    phone_number_id: str = ""
    # The item's id when it had a readable one, so a redelivery is still one row.
    wamid: str = ""


@dataclass
class Change:
    """One `entry[].changes[]` item: its field, where it was, and its value (for fields other
    than messages, whose items are read into `Delivery.messages` and `Delivery.statuses`)."""

    field: str
    path: str
    waba_id: str
    phone_number_id: str = ""
    value: dict[str, Any] | None = None
    # Why it could not be read, or Meta's own errors on a messages change.
    problems: list[str] = dataclasses.field(default_factory=list)


@dataclass
class Delivery:
    messages: list[InboundItem] = dataclasses.field(default_factory=list)
    unreadable: list[UnreadableItem] = dataclasses.field(default_factory=list)
    # The status notifications of each phone-number id, as Meta sent them.
    statuses: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    changes: list[Change] = dataclasses.field(default_factory=list)

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
    delivery = Delivery()
    if not isinstance(data, dict) or data.get("object") != _OBJECT:
        reason = (
            f"object must be {_OBJECT!r}" if isinstance(data, dict) else f"body must be an object, got {kind_of(data)}"
        )
        delivery.changes.append(Change(field="", path="object", waba_id="", problems=[reason]))
        return delivery
    try:
        entries = read_list(data, "entry", "")
    except Unreadable as exc:
        delivery.changes.append(Change(field="", path="entry", waba_id="", problems=[str(exc)]))
        return delivery
    for e, entry in enumerate(entries):
        where = f"entry[{e}]"
        if not isinstance(entry, dict):
            delivery.changes.append(Change(field="", path=where, waba_id="", problems=[f"{where} must be an object"]))
            continue
        waba_id = optional_id(entry, "id", max_chars=64)
        try:
            changes = read_list(entry, "changes", where)
        except Unreadable as exc:
            delivery.changes.append(Change(field="", path=f"{where}.changes", waba_id=waba_id, problems=[str(exc)]))
            continue
        for c, change in enumerate(changes):
            _read_change(change, f"{where}.changes[{c}]", waba_id, delivery)
    return delivery


def _read_change(change: Any, where: str, waba_id: str, delivery: Delivery) -> None:
    if not isinstance(change, dict):
        delivery.changes.append(
            Change(
                field="", path=where, waba_id=waba_id, problems=[f"{where} must be an object, got {kind_of(change)}"]
            )
        )
        return
    name = optional_id(change, "field", max_chars=64)
    value = change.get("value")
    if not name or not isinstance(value, dict):
        problem = f"{where}.field is missing" if not name else f"{where}.value must be an object, got {kind_of(value)}"
        delivery.changes.append(Change(field=name, path=where, waba_id=waba_id, problems=[problem]))
        return
    if name != MESSAGES:
        metadata = object_at(value, "metadata")
        delivery.changes.append(
            Change(
                field=name,
                path=where,
                waba_id=waba_id,
                phone_number_id=optional_id(metadata, "phone_number_id", max_chars=64),
                value=value,
            )
        )
        return
    record = Change(field=name, path=where, waba_id=waba_id)
    delivery.changes.append(record)
    _read_messages_value(value, f"{where}.value", record, delivery)


def _read_messages_value(value: dict[str, Any], where: str, record: Change, delivery: Delivery) -> None:
    errors = value.get("errors")
    if isinstance(errors, list) and errors:
        # Meta's own errors on the change (a message it could not deliver to us, say).
        codes = [str(e.get("code")) for e in errors if isinstance(e, dict) and e.get("code") is not None]
        record.problems.append(f"{where}.errors: Meta reported error(s) {', '.join(codes) or '(no code)'}")
    metadata = object_at(value, "metadata")
    phone_number_id = optional_id(metadata, "phone_number_id", max_chars=64)
    record.phone_number_id = phone_number_id
    contacts = read_contacts(list_at(value, "contacts"))
    for key in ("messages", "statuses"):
        items = value.get(key)
        if items is not None and not isinstance(items, list):
            record.problems.append(f"{where}.{key} must be a list, got {kind_of(items)}")
    messages = list_at(value, "messages")
    statuses = list_at(value, "statuses")
    for i, message in enumerate(messages):
        at = f"{where}.messages[{i}]"
        wamid = optional_id(message, "id") if isinstance(message, dict) else ""
        if not phone_number_id:
            reason = f"{where}.metadata.phone_number_id is missing: the message cannot be routed"
            delivery.unreadable.append(UnreadableItem(path=at, reason=reason, wamid=wamid))
            continue
        try:
            delivery.messages.append(read_message(message, at, phone_number_id, contacts))
        except Unreadable as exc:
            delivery.unreadable.append(
                UnreadableItem(path=at, reason=str(exc), phone_number_id=phone_number_id, wamid=wamid)
            )
    for i, status in enumerate(statuses):
        if not isinstance(status, dict):
            record.problems.append(f"{where}.statuses[{i}] must be an object, got {kind_of(status)}")
            continue
        delivery.statuses.setdefault(phone_number_id, []).append(status)
