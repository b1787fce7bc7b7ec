"""One item of a `messages` change read into what we keep: who sent it (as Meta names the
customer now), what kind it is, and its text or media.

Meta names a customer by a business-scoped user id (BSUID: `contacts[].user_id`, the
message's `from_user_id`) and by their number (`from`, `contacts[].wa_id`) unless they adopted
a username, when the number is withheld and `from` is absent or holds the BSUID. A message
with neither is unreadable; one with either is kept. Kinds we do not read into text (location,
contacts, order, ...) are kept with their type; a consumer decides what it understands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from leads.models import CustomerIds, is_bsuid
from whatsapp.edge.webhook.reading import (
    Unreadable,
    object_at,
    optional_id,
    optional_text,
    read_id,
    read_object,
    read_timestamp,
    storable,
)

_MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")
# The interactive replies whose title (or body) is the customer's answer.
_TEXT_REPLIES = ("button_reply", "list_reply", "nfm_reply")
_NUMBER = re.compile(r"^[0-9]{7,15}$")
# System notices that change who the customer is (Meta's `system.type`).
CHANGED_NUMBER = "user_changed_number"
CHANGED_USER_ID = "user_changed_user_id"


@dataclass(frozen=True)
class Media:
    id: str
    mime_type: str = ""
    caption: str = ""
    filename: str = ""


@dataclass(frozen=True)
class SystemChange:
    """A system notice that the customer changed number or BSUID, and to what."""

    kind: str
    new_wa_id: str = ""
    new_user_id: str = ""


@dataclass(frozen=True)
class InboundItem:
    wamid: str
    phone_number_id: str
    customer: CustomerIds
    type: str
    text: str
    received_at: datetime
    path: str
    media: Media | None = None
    system: SystemChange | None = None


@dataclass(frozen=True)
class Contact:
    wa_id: str = ""
    user_id: str = ""
    parent_user_id: str = ""
    name: str = ""
    username: str = ""


def read_contacts(contacts: list[Any]) -> list[Contact]:
    """`value.contacts[]`: what Meta says of each sender. Lenient: a contact is only a hint."""
    read = []
    for contact in contacts:
        if not isinstance(contact, dict):
            continue
        profile = object_at(contact, "profile")
        read.append(
            Contact(
                wa_id=_number(optional_id(contact, "wa_id", max_chars=32)),
                user_id=_bsuid(optional_id(contact, "user_id", max_chars=140)),
                parent_user_id=_bsuid(optional_id(contact, "parent_user_id", max_chars=140)),
                name=optional_id(profile, "name"),
                username=optional_id(profile, "username", max_chars=64),
            )
        )
    return read


def read_message(message: Any, where: str, phone_number_id: str, contacts: list[Contact]) -> InboundItem:
    """Raises Unreadable, naming where, when the item is not a message we can keep."""
    message = read_object(message, where)
    wamid = read_id(message, "id", where)
    kind = read_id(message, "type", where, max_chars=32)
    received_at = read_timestamp(message, where)
    customer = _sender(message, where, contacts)
    text, media, system = _content(message, kind, where)
    return InboundItem(
        wamid=wamid,
        phone_number_id=phone_number_id,
        customer=customer,
        type=kind,
        text=text,
        received_at=received_at,
        path=where,
        media=media,
        system=system,
    )


def _sender(message: dict[str, Any], where: str, contacts: list[Contact]) -> CustomerIds:
    sender = optional_id(message, "from", max_chars=140)
    wa_id = sender if _NUMBER.match(sender) else ""
    user_id = _bsuid(optional_id(message, "from_user_id", max_chars=140)) or (sender if is_bsuid(sender) else "")
    if sender and not wa_id and not user_id:
        raise Unreadable(f"{where}.from is neither a phone number nor a business-scoped user id")
    contact = next(
        (c for c in contacts if (wa_id and c.wa_id == wa_id) or (user_id and c.user_id == user_id)),
        contacts[0] if len(contacts) == 1 else None,
    )
    if contact is not None:
        wa_id = wa_id or contact.wa_id
        user_id = user_id or contact.user_id
    if not wa_id and not user_id:
        raise Unreadable(f"{where} names no customer: no from, from_user_id or contacts[].user_id")
    return CustomerIds(
        wa_id=wa_id,
        user_id=user_id,
        parent_user_id=_bsuid(optional_id(message, "from_parent_user_id", max_chars=140))
        or (contact.parent_user_id if contact else ""),
        username=contact.username if contact else "",
        name=contact.name if contact else "",
    )


def _content(message: dict[str, Any], kind: str, where: str) -> tuple[str, Media | None, SystemChange | None]:
    body = message.get(kind)
    at = f"{where}.{kind}"
    if kind == "text":
        return optional_text(read_object(body, at), "body", at), None, None
    if kind == "button":
        return optional_text(read_object(body, at), "text", at), None, None
    if kind == "interactive":
        interactive = read_object(body, at)
        for reply_kind in ("button_reply", "list_reply"):
            reply = interactive.get(reply_kind)
            if isinstance(reply, dict):
                return optional_text(reply, "title", f"{at}.{reply_kind}"), None, None
        nfm = interactive.get("nfm_reply")
        if isinstance(nfm, dict):
            return optional_text(nfm, "body", f"{at}.nfm_reply"), None, None
        # A reply of a kind with no text (Meta's call_permission_reply, say) names itself in
        # `type` and carries an object of that name: kept with its type, like a location.
        reply_kind = optional_id(interactive, "type", max_chars=64)
        if reply_kind not in _TEXT_REPLIES and isinstance(interactive.get(reply_kind), dict):
            return "", None, None
        raise Unreadable(f"{at} has no button_reply, list_reply or nfm_reply")
    if kind in _MEDIA_TYPES:
        item = read_object(body, at)
        media = Media(
            id=read_id(item, "id", at),
            mime_type=optional_text(item, "mime_type", at),
            caption=optional_text(item, "caption", at),
            filename=optional_text(item, "filename", at),
        )
        return media.caption, media, None
    if kind == "reaction" and isinstance(body, dict):
        emoji = body.get("emoji")
        return (storable(emoji) if isinstance(emoji, str) else ""), None, None
    if kind == "order" and isinstance(body, dict):
        return optional_text(body, "text", at), None, None
    if kind == "system":
        # The notice's body names both numbers: it is not kept as text.
        system = read_object(body, at)
        change = optional_id(system, "type", max_chars=64)
        return (
            "",
            None,
            SystemChange(
                kind=change,
                new_wa_id=_number(
                    optional_id(system, "new_wa_id", max_chars=32) or optional_id(system, "wa_id", max_chars=32)
                ),
                new_user_id=_bsuid(
                    optional_id(system, "new_user_id", max_chars=140) or optional_id(system, "user_id", max_chars=140)
                ),
            ),
        )
    return "", None, None


def _number(value: str) -> str:
    return value if _NUMBER.match(value) else ""


def _bsuid(value: str) -> str:
    return value if is_bsuid(value) else ""
