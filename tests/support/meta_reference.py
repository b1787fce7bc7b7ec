"""Meta's documented webhook examples: one per message type, status and field we read.

Copied from Meta's webhook reference, not invented: the "messages" webhook reference (a page
per type under REFERENCE/messages/<type>), the field pages (REFERENCE/<field>), the older
payload examples page (PAYLOAD_EXAMPLES) and the business-scoped user ids page (BSUID_PAGE).
Each example names the page it comes from. The values are Meta's own (Sheena Nelson,
16505551234, Pablo M., US.13491208655302741918, ...). Three things differ, so that the tests
route to the test business and never depend on the day they were written:

- the phone-number id and account id are the test business's (tests/support/meta; Meta's
  own sample ids, as it happens);
- each message and status gets a fresh wamid, so examples never collide;
- timestamps are a minute ago (future ones a day ahead).

Each message example also says what the webhook makes of it (`state`): a row to publish
(PENDING), a system notice applied to the lead (APPLIED), or a row kept UNREADABLE with its
JSON path. Those expectations are the product's; the shapes are Meta's.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.support.meta import DISPLAY_NUMBER, PHONE_NUMBER_ID, WABA_ID

REFERENCE = "https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference"
MESSAGES_REFERENCE = f"{REFERENCE}/messages"
PAYLOAD_EXAMPLES = "https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/payload-examples"
BSUID_PAGE = "https://developers.facebook.com/documentation/business-messaging/whatsapp/business-scoped-user-ids"
ERROR_CODES = "https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes"
# The older WABA webhooks reference, which documented ACCOUNT_RESTRICTION's restriction_info.
COMPONENTS = "https://developers.facebook.com/docs/whatsapp/business-management-api/webhooks/components"

# Meta's example values.
CUSTOMER = "16505551234"
CUSTOMER_NAME = "Sheena Nelson"
NEW_NUMBER = "16505556789"
BSUID = "US.13491208655302741918"
PARENT_BSUID = "US.ENT.11815799212886844830"
NEW_BSUID = "US.20837465019283746501"
NEW_PARENT_BSUID = "US.ENT.20837465019283746502"
# The BSUID page's number for user_changed_user_id (its system.wa_id).
BSUID_PAGE_NEW_NUMBER = "16505559876"
BSUID_NAME = "Pablo M."
USERNAME = "pablomorales"
CONTEXT_WAMID = "wamid.HBgLMTQxMjU1NTA4MjkVAgASGBQzQUNCNjk5RDUwNUZGMUZEM0VBRAA="
MEDIA_URL = "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=133..."
METADATA = {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": PHONE_NUMBER_ID}

PENDING = "PENDING"  # stored, to go out as a request event
APPLIED = "APPLIED"  # a system notice applied to the lead, never published
UNREADABLE = "UNREADABLE"

# The contacts card Meta sends with most messages, and the BSUID page's (a username customer
# whose number Meta still shares, and one whose number it withholds).
SHEENA = [{"profile": {"name": CUSTOMER_NAME}, "wa_id": CUSTOMER}]
PABLO = [
    {
        "profile": {"name": BSUID_NAME, "username": USERNAME},
        "wa_id": CUSTOMER,
        "user_id": BSUID,
        "parent_user_id": PARENT_BSUID,
    }
]
PABLO_NO_NUMBER = [
    {"profile": {"name": BSUID_NAME, "username": USERNAME}, "user_id": BSUID, "parent_user_id": PARENT_BSUID}
]


def now() -> int:
    return int(time.time())


def minute_ago() -> str:
    """Meta's `timestamp`: Unix seconds as a string."""
    return str(now() - 60)


def fresh_wamid() -> str:
    return "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQ" + uuid.uuid4().hex.upper() + "AA="


@dataclass(frozen=True)
class Customer:
    """Who a message names, as it should be stored: number, BSUID, username."""

    wa_id: str = ""
    user_id: str = ""
    username: str = ""


@dataclass(frozen=True)
class MessageExample:
    name: str
    source: str
    # Meta's message object with its sender keys (from, from_user_id, ...), without id and
    # timestamp, which message() adds fresh.
    body: dict[str, Any]
    state: str
    stored_type: str = ""
    stored_text: str = ""
    # value.contacts as Meta sends it; None where Meta sends none (system messages).
    contacts: list[dict[str, Any]] | None = field(default_factory=lambda: SHEENA)
    customer: Customer = Customer(wa_id=CUSTOMER)
    # For a notice that the customer changed identifier: the lead after it is applied.
    changed_to: Customer | None = None


def _media(kind: str, **item: Any) -> dict[str, Any]:
    return {"from": CUSTOMER, "type": kind, kind: item}


MESSAGE_EXAMPLES: list[MessageExample] = [
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/text
    MessageExample(
        "text",
        f"{MESSAGES_REFERENCE}/text",
        {"from": CUSTOMER, "type": "text", "text": {"body": "Does it come in another color?"}},
        PENDING,
        "text",
        "Does it come in another color?",
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/image
    MessageExample(
        "image",
        f"{MESSAGES_REFERENCE}/image",
        _media(
            "image",
            caption="Taj Mahal",
            mime_type="image/jpeg",
            sha256="SfInY0gGKTsJlUWbwxC1k+FAD0FZHvzwfpvO0zX0GUI=",
            id="1003383421387256",
            url=MEDIA_URL,
        ),
        PENDING,
        "image",
        "Taj Mahal",
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/video
    # (the syntax of that page; caption and media id are the video messages page's example values)
    MessageExample(
        "video",
        f"{MESSAGES_REFERENCE}/video",
        _media(
            "video",
            caption="A succulent eclipse!",
            mime_type="video/mp4",
            sha256="SfInY0gGKTsJlUWbwxC1k+FAD0FZHvzwfpvO0zX0GUI=",
            id="1166846181421424",
            url=MEDIA_URL,
        ),
        PENDING,
        "video",
        "A succulent eclipse!",
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/audio
    # ("voice": false is an uploaded audio file, true a voice note recorded in the client)
    MessageExample(
        "audio",
        f"{MESSAGES_REFERENCE}/audio",
        _media(
            "audio",
            mime_type="audio/ogg; codecs=opus",
            sha256="wvqXMe6n7n1W0zphvLPoLj+s/NtKqmr3zZ7YzTP7xFI=",
            id="1908647269898586",
            url=MEDIA_URL,
            voice=False,
        ),
        PENDING,
        "audio",
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/audio
    MessageExample(
        "voice",
        f"{MESSAGES_REFERENCE}/audio",
        _media(
            "audio",
            mime_type="audio/ogg; codecs=opus",
            sha256="wvqXMe6n7n1W0zphvLPoLj+s/NtKqmr3zZ7YzTP7xFI=",
            id="1908647269898587",
            url=MEDIA_URL,
            voice=True,
        ),
        PENDING,
        "audio",
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/document
    MessageExample(
        "document",
        f"{MESSAGES_REFERENCE}/document",
        _media(
            "document",
            caption="my receipt",
            filename="receipt.pdf",
            mime_type="application/pdf",
            sha256="V5OPpLD/gEG6Xjg0MbmQDLFgcKsL+j5LfY4ny/pZ4MY=",
            id="622684793477189",
            url=MEDIA_URL,
        ),
        PENDING,
        "document",
        "my receipt",
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/sticker
    MessageExample(
        "sticker",
        f"{MESSAGES_REFERENCE}/sticker",
        _media(
            "sticker",
            mime_type="image/webp",
            sha256="wvqXMe6n7n1W0zphvLPoLj+s/NtKqmr3zZ7YzTP7xFI=",
            id="1908647269898588",
            url=MEDIA_URL,
            animated=True,
        ),
        PENDING,
        "sticker",
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/reaction
    MessageExample(
        "reaction",
        f"{MESSAGES_REFERENCE}/reaction",
        {"from": CUSTOMER, "type": "reaction", "reaction": {"message_id": CONTEXT_WAMID, "emoji": "\U0001f44d"}},
        PENDING,
        "reaction",
        "\U0001f44d",
    ),
    # Same page: "the emoji property is omitted" when the customer removes their reaction.
    MessageExample(
        "reaction removed",
        f"{MESSAGES_REFERENCE}/reaction",
        {"from": CUSTOMER, "type": "reaction", "reaction": {"message_id": CONTEXT_WAMID}},
        PENDING,
        "reaction",
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/location
    MessageExample(
        "location",
        f"{MESSAGES_REFERENCE}/location",
        {
            "from": CUSTOMER,
            "location": {
                "address": "101 Forest Ave, Palo Alto, CA 94301",
                "latitude": 37.44221496582,
                "longitude": -122.16165924072,
                "name": "Philz Coffee",
                "url": "https://philzcoffee.com/",
            },
            "type": "location",
        },
        PENDING,
        "location",
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/contacts
    MessageExample(
        "contacts",
        f"{MESSAGES_REFERENCE}/contacts",
        {
            "from": CUSTOMER,
            "type": "contacts",
            "contacts": [
                {
                    "name": {"first_name": "Barbara", "last_name": "Johnson", "formatted_name": "Barbara J. Johnson"},
                    "org": {"company": "Social Tsunami"},
                    "phones": [{"phone": "+1 (415) 555-0829", "wa_id": "14125550829", "type": "MOBILE"}],
                }
            ],
        },
        PENDING,
        "contacts",
    ),
    # https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/payload-examples ("Reply button":
    # a template's quick-reply button)
    MessageExample(
        "button",
        PAYLOAD_EXAMPLES,
        {
            "context": {"from": DISPLAY_NUMBER, "id": CONTEXT_WAMID},
            "from": CUSTOMER,
            "type": "button",
            "button": {"text": "No", "payload": "No-Button-Payload"},
        },
        PENDING,
        "button",
        "No",
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/interactive
    # (and the interactive reply buttons messages page's webhook example)
    MessageExample(
        "interactive button reply",
        f"{MESSAGES_REFERENCE}/interactive",
        {
            "context": {"from": DISPLAY_NUMBER, "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MEM2RUJFNkI0RENGQTVDRjUA"},
            "from": CUSTOMER,
            "type": "interactive",
            "interactive": {"type": "button_reply", "button_reply": {"id": "cancel-button", "title": "Cancel"}},
        },
        PENDING,
        "interactive",
        "Cancel",
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/interactive
    MessageExample(
        "interactive list reply",
        f"{MESSAGES_REFERENCE}/interactive",
        {
            "context": {"from": DISPLAY_NUMBER, "id": CONTEXT_WAMID},
            "from": CUSTOMER,
            "type": "interactive",
            "interactive": {
                "type": "list_reply",
                "list_reply": {
                    "id": "priority_express",
                    "title": "Priority Mail Express",
                    "description": "Next Day to 2 Days",
                },
            },
        },
        PENDING,
        "interactive",
        "Priority Mail Express",
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/interactive
    # (a call permission reply: an interactive reply with no title or body, kept with its type)
    MessageExample(
        "interactive call permission reply",
        f"{MESSAGES_REFERENCE}/interactive",
        {
            "context": {"from": DISPLAY_NUMBER, "id": "wamid.gBGGFlaCmZ9plHrf2Mh-o"},
            "from": CUSTOMER,
            "from_user_id": BSUID,
            "from_parent_user_id": PARENT_BSUID,
            "type": "interactive",
            "interactive": {
                "type": "call_permission_reply",
                "call_permission_reply": {
                    "response": "accept",
                    "is_permanent": False,
                    "expiration_timestamp": str(now() + 86400),
                    "response_source": "user_action",
                },
            },
        },
        PENDING,
        "interactive",
        contacts=[
            {
                "profile": {"name": CUSTOMER_NAME, "username": "realsheenanelson"},
                "wa_id": CUSTOMER,
                "user_id": BSUID,
                "parent_user_id": PARENT_BSUID,
            }
        ],
        customer=Customer(CUSTOMER, BSUID, "realsheenanelson"),
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/interactive
    # (its syntax: the reply object is per interactive.type; here the type names a reply it lacks)
    MessageExample(
        "interactive with no reply in it",
        f"{MESSAGES_REFERENCE}/interactive",
        {
            "context": {"from": DISPLAY_NUMBER, "id": CONTEXT_WAMID},
            "from": CUSTOMER,
            "type": "interactive",
            "interactive": {"type": "button_reply"},
        },
        UNREADABLE,
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/order
    MessageExample(
        "order",
        f"{MESSAGES_REFERENCE}/order",
        {
            "from": CUSTOMER,
            "type": "order",
            "order": {
                "catalog_id": "194836987003835",
                "text": "Love these!",
                "product_items": [
                    {"product_retailer_id": "di9ozbzfi4", "quantity": 2, "item_price": 30, "currency": "USD"},
                    {"product_retailer_id": "nqryix03ez", "quantity": 1, "item_price": 25, "currency": "USD"},
                ],
            },
        },
        PENDING,
        "order",
        "Love these!",
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/system
    # ("Unlike other incoming messages webhooks, system messages webhooks don't include a contacts array.")
    MessageExample(
        "system: user changed number",
        f"{MESSAGES_REFERENCE}/system",
        {
            "from": CUSTOMER,
            "type": "system",
            "system": {
                "body": f"User {CUSTOMER_NAME} changed from {CUSTOMER} to {NEW_NUMBER}",
                "wa_id": NEW_NUMBER,
                "type": "user_changed_number",
            },
        },
        APPLIED,
        "system",
        contacts=None,
        changed_to=Customer(NEW_NUMBER, BSUID),
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/business-scoped-user-ids
    # (system messages webhooks: user_changed_user_id, with the new BSUID and parent BSUID)
    MessageExample(
        "system: user changed user id",
        BSUID_PAGE,
        {
            "from": CUSTOMER,
            "type": "system",
            "system": {
                "body": "User...",
                "wa_id": BSUID_PAGE_NEW_NUMBER,
                "user_id": NEW_BSUID,
                "parent_user_id": NEW_PARENT_BSUID,
                "type": "user_changed_user_id",
            },
        },
        APPLIED,
        "system",
        contacts=None,
        changed_to=Customer(BSUID_PAGE_NEW_NUMBER, NEW_BSUID),
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/business-scoped-user-ids
    # (edit messages webhooks: the customer edited an image's caption)
    MessageExample(
        "edit",
        BSUID_PAGE,
        {
            "from": CUSTOMER,
            "from_user_id": BSUID,
            "from_parent_user_id": PARENT_BSUID,
            "type": "edit",
            "edit": {
                "original_message_id": CONTEXT_WAMID,
                "message": {
                    "context": {"id": "M0"},
                    "type": "image",
                    "image": {
                        "caption": "Updated image caption",
                        "mime_type": "image/jpeg",
                        "sha256": "a1b2c3d4e5f6...",
                        "id": "1234567890",
                        "url": "https://media.example.com/updated-image.jpg",
                    },
                },
            },
        },
        PENDING,
        "edit",
        contacts=PABLO,
        customer=Customer(CUSTOMER, BSUID, USERNAME),
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/business-scoped-user-ids
    # (revoke messages webhooks: the customer deleted a message)
    MessageExample(
        "revoke",
        BSUID_PAGE,
        {
            "from": CUSTOMER,
            "from_user_id": BSUID,
            "from_parent_user_id": PARENT_BSUID,
            "type": "revoke",
            "revoke": {"original_message_id": CONTEXT_WAMID},
        },
        PENDING,
        "revoke",
        contacts=PABLO,
        customer=Customer(CUSTOMER, BSUID, USERNAME),
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/unsupported
    MessageExample(
        "unsupported",
        f"{MESSAGES_REFERENCE}/unsupported",
        {
            "from": CUSTOMER,
            "errors": [
                {
                    "code": 131051,
                    "title": "Message type unknown",
                    "message": "Message type unknown",
                    "error_data": {"details": "Message type is currently not supported."},
                }
            ],
            "type": "unsupported",
            "unsupported": {"type": "poll_creation"},
        },
        PENDING,
        "unsupported",
    ),
    # https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/payload-examples ("Unknown messages")
    MessageExample(
        "a message with errors",
        PAYLOAD_EXAMPLES,
        {
            "from": CUSTOMER,
            "errors": [
                {
                    "code": 131051,
                    "details": "Message type is not currently supported",
                    "title": "Unsupported message type",
                }
            ],
            "type": "unknown",
        },
        PENDING,
        "unknown",
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/business-scoped-user-ids
    # (incoming messages webhooks: number, BSUID and parent BSUID together)
    MessageExample(
        "text naming the customer by number and BSUID",
        BSUID_PAGE,
        {
            "from": CUSTOMER,
            "from_user_id": BSUID,
            "from_parent_user_id": PARENT_BSUID,
            "group_id": "Y2FwaV9ncm91cDoxOTUwNTU1MDA3OToxMjAzNjMzOTQzMjAdOTY0MTUZD",
            "type": "text",
            "text": {"body": "Does it come in another color?"},
        },
        PENDING,
        "text",
        "Does it come in another color?",
        contacts=PABLO,
        customer=Customer(CUSTOMER, BSUID, USERNAME),
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/business-scoped-user-ids
    # (a username customer whose number is withheld: no wa_id, no from, from_user_id set)
    MessageExample(
        "username customer, no from",
        BSUID_PAGE,
        {
            "from_user_id": BSUID,
            "from_parent_user_id": PARENT_BSUID,
            "type": "text",
            "text": {"body": "Does it come in another color?"},
        },
        PENDING,
        "text",
        "Does it come in another color?",
        contacts=PABLO_NO_NUMBER,
        customer=Customer("", BSUID, USERNAME),
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/business-scoped-user-ids
    # (the same customer where `from` holds the BSUID in place of the withheld number)
    MessageExample(
        "username customer, from holding the BSUID",
        BSUID_PAGE,
        {"from": BSUID, "type": "text", "text": {"body": "Does it come in another color?"}},
        PENDING,
        "text",
        "Does it come in another color?",
        contacts=PABLO_NO_NUMBER,
        customer=Customer("", BSUID, USERNAME),
    ),
]


def message(example: MessageExample, wamid: str | None = None) -> dict[str, Any]:
    """The example's message object as Meta posts it, with a fresh id and timestamp."""
    return {**example.body, "id": wamid or fresh_wamid(), "timestamp": minute_ago()}


def messages_value(example: MessageExample, *messages: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = {"messaging_product": "whatsapp", "metadata": dict(METADATA)}
    if example.contacts is not None:
        value["contacts"] = example.contacts
    value["messages"] = list(messages)
    return value


def delivery(*changes: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """A whole delivery as Meta posts it: one entry for the test business's account (with
    Meta's `time`), one change per (field, value)."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": WABA_ID,
                "time": now(),
                "changes": [{"value": value, "field": name} for name, value in changes],
            }
        ],
    }


# --- statuses ----------------------------------------------------------------------------
STATUSES_SOURCE = f"{MESSAGES_REFERENCE}/status"


@dataclass(frozen=True)
class StatusExample:
    name: str
    source: str
    # Meta's status object without id and timestamp.
    body: dict[str, Any]
    contacts: list[dict[str, Any]] | None = None


STATUS_EXAMPLES: list[StatusExample] = [
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/status
    StatusExample(
        "sent",
        STATUSES_SOURCE,
        {
            "status": "sent",
            "recipient_id": CUSTOMER,
            "conversation": {
                "id": "72b14d6bd5407799e66f64d1b338e567",
                "expiration_timestamp": str(now() + 86400),
                "origin": {"type": "marketing"},
            },
            "pricing": {"billable": True, "pricing_model": "PMP", "type": "regular", "category": "marketing"},
        },
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/business-scoped-user-ids
    # (status messages webhooks: the recipient's BSUID and parent BSUID beside the number)
    StatusExample(
        "delivered",
        BSUID_PAGE,
        {
            "status": "delivered",
            "recipient_id": CUSTOMER,
            "recipient_user_id": BSUID,
            "recipient_parent_user_id": PARENT_BSUID,
        },
        contacts=PABLO,
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/status
    # (since v24.0 a read status carries no conversation or pricing)
    StatusExample("read", STATUSES_SOURCE, {"status": "read", "recipient_id": CUSTOMER}),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/status
    StatusExample(
        "failed",
        STATUSES_SOURCE,
        {
            "status": "failed",
            "recipient_id": CUSTOMER,
            "errors": [
                {
                    "code": 131049,
                    "title": "This message was not delivered to maintain healthy ecosystem engagement.",
                    "message": "This message was not delivered to maintain healthy ecosystem engagement.",
                    "error_data": {
                        "details": "In order to maintain a healthy ecosystem engagement, the message failed to be "
                        "delivered."
                    },
                    "href": "/documentation/business-messaging/whatsapp/support/error-codes",
                }
            ],
        },
    ),
    # https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes (131047)
    StatusExample(
        "failed: re-engagement",
        ERROR_CODES,
        {
            "status": "failed",
            "recipient_id": CUSTOMER,
            "errors": [
                {
                    "code": 131047,
                    "title": "Re-engagement message",
                    "message": "Re-engagement message",
                    "error_data": {
                        "details": "Message failed to send because more than 24 hours have passed since the "
                        "customer last replied to this number."
                    },
                    "href": "/documentation/business-messaging/whatsapp/support/error-codes",
                }
            ],
        },
    ),
]


def status(example: StatusExample, wamid: str | None = None) -> dict[str, Any]:
    return {"id": wamid or fresh_wamid(), "timestamp": minute_ago(), **example.body}


def statuses_value(example: StatusExample, *statuses: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = {"messaging_product": "whatsapp", "metadata": dict(METADATA)}
    if example.contacts is not None:
        value["contacts"] = example.contacts
    value["statuses"] = list(statuses)
    return value


# --- fields other than messages ----------------------------------------------------------
@dataclass(frozen=True)
class FieldExample:
    name: str
    field: str
    source: str
    value: dict[str, Any]
    # The account notice's severity, where the field makes one: the product's judgement.
    severity: str = ""


def field_examples() -> list[FieldExample]:
    """Built per call, so that every timestamp is fresh."""
    at = now() - 60
    return [
        # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/message_template_status_update
        FieldExample(
            "template approved",
            "message_template_status_update",
            f"{REFERENCE}/message_template_status_update",
            {
                "event": "APPROVED",
                "message_template_id": 1689556908129832,
                "message_template_name": "order_confirmation",
                "message_template_language": "en-US",
                "reason": "NONE",
                "message_template_category": "UTILITY",
            },
        ),
        # Same page: rejected with INVALID_FORMAT (Meta's example lacks a comma; otherwise as written).
        FieldExample(
            "template rejected",
            "message_template_status_update",
            f"{REFERENCE}/message_template_status_update",
            {
                "event": "REJECTED",
                "message_template_id": 1689556908129835,
                "message_template_name": "abandoned_cart",
                "message_template_language": "en",
                "reason": "INVALID_FORMAT",
                "message_template_category": "MARKETING",
                "rejection_info": {
                    "reason": "Your template has parameters placed next to each other (like {{1}}{{2}}) without "
                    "text or punctuation between them.",
                    "recommendation": "Separate parameters with descriptive text and ensure each parameter is "
                    "clearly contextualized.",
                },
            },
        ),
        # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/message_template_quality_update
        FieldExample(
            "template quality",
            "message_template_quality_update",
            f"{REFERENCE}/message_template_quality_update",
            {
                "previous_quality_score": "GREEN",
                "new_quality_score": "YELLOW",
                "message_template_id": 806312974732579,
                "message_template_name": "welcome_template",
                "message_template_language": "en-US",
            },
        ),
        # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/template_category_update
        # (an impending change: new_category is the current one, correct_category the coming one)
        FieldExample(
            "template category impending",
            "template_category_update",
            f"{REFERENCE}/template_category_update",
            {
                "message_template_id": 278077987957091,
                "message_template_name": "welcome_template",
                "message_template_language": "en-US",
                "new_category": "UTILITY",
                "correct_category": "MARKETING",
                "category_update_timestamp": at + 86400,
            },
        ),
        # Same page: the change done.
        FieldExample(
            "template category changed",
            "template_category_update",
            f"{REFERENCE}/template_category_update",
            {
                "message_template_id": 278077987957091,
                "message_template_name": "welcome_template",
                "message_template_language": "en-US",
                "previous_category": "UTILITY",
                "new_category": "MARKETING",
            },
        ),
        # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/user_preferences
        # (the syntax with the stop values the page lists)
        FieldExample(
            "marketing stop",
            "user_preferences",
            f"{REFERENCE}/user_preferences",
            {
                "messaging_product": "whatsapp",
                "metadata": dict(METADATA),
                "contacts": SHEENA,
                "user_preferences": [
                    {
                        "wa_id": CUSTOMER,
                        "detail": "User requested to stop marketing messages",
                        "category": "marketing_messages",
                        "value": "stop",
                        "timestamp": at,
                    }
                ],
            },
        ),
        # Same page's example: a resume.
        FieldExample(
            "marketing resume",
            "user_preferences",
            f"{REFERENCE}/user_preferences",
            {
                "messaging_product": "whatsapp",
                "metadata": dict(METADATA),
                "contacts": [{"wa_id": CUSTOMER}],
                "user_preferences": [
                    {
                        "wa_id": CUSTOMER,
                        "detail": "User requested to resume marketing messages",
                        "category": "marketing_messages",
                        "value": "resume",
                        "timestamp": at,
                    }
                ],
            },
        ),
        # https://developers.facebook.com/documentation/business-messaging/whatsapp/business-scoped-user-ids
        # (user preferences webhooks, with the customer's BSUID)
        FieldExample(
            "marketing resume, with BSUID",
            "user_preferences",
            BSUID_PAGE,
            {
                "messaging_product": "whatsapp",
                "metadata": dict(METADATA),
                "contacts": PABLO,
                "user_preferences": [
                    {
                        "wa_id": CUSTOMER,
                        "user_id": BSUID,
                        "parent_user_id": PARENT_BSUID,
                        "detail": "User requested to resume marketing messages",
                        "category": "marketing_messages",
                        "value": "resume",
                        "timestamp": at,
                    }
                ],
            },
        ),
        # https://developers.facebook.com/documentation/business-messaging/whatsapp/business-scoped-user-ids
        # (user_id_update webhooks)
        FieldExample(
            "user id update",
            "user_id_update",
            BSUID_PAGE,
            {
                "messaging_product": "whatsapp",
                "metadata": dict(METADATA),
                "contacts": [{"profile": {"name": BSUID_NAME}, "wa_id": CUSTOMER}],
                "user_id_update": [
                    {
                        "wa_id": CUSTOMER,
                        "detail": f"User id for {BSUID_NAME} has been updated.",
                        "user_id": {"previous": BSUID, "current": NEW_BSUID},
                        "parent_user_id": {"previous": PARENT_BSUID, "current": NEW_PARENT_BSUID},
                        "timestamp": str(at),
                    }
                ],
            },
        ),
        # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/account_update
        FieldExample(
            "account violation",
            "account_update",
            f"{REFERENCE}/account_update",
            {"event": "ACCOUNT_VIOLATION", "violation_info": {"violation_type": "ADULT"}},
            severity="critical",
        ),
        # Same page: the account reinstated after being disabled.
        FieldExample(
            "account reinstated",
            "account_update",
            f"{REFERENCE}/account_update",
            {
                "event": "DISABLED_UPDATE",
                "ban_info": {"waba_ban_state": "REINSTATE", "waba_ban_date": "April 17, 2025"},
            },
            severity="info",
        ),
        # https://developers.facebook.com/docs/whatsapp/business-management-api/webhooks/components
        # (account_update ACCOUNT_RESTRICTION with its restriction_info, as the older reference has it)
        FieldExample(
            "account restriction",
            "account_update",
            COMPONENTS,
            {
                "phone_number": DISPLAY_NUMBER,
                "event": "ACCOUNT_RESTRICTION",
                "restriction_info": [
                    {"restriction_type": "RESTRICTED_ADD_PHONE_NUMBER_ACTION", "expiration": at + 86400}
                ],
            },
            severity="critical",
        ),
        # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/account_alerts
        FieldExample(
            "account alert",
            "account_alerts",
            f"{REFERENCE}/account_alerts",
            {
                "entity_type": "BUSINESS",
                "entity_id": "506914307656634",
                "alert_info": {
                    "alert_severity": "WARNING",
                    "alert_status": "ACTIVE",
                    "alert_type": "INCREASED_CAPABILITIES_ELIGIBILITY_DEFERRED",
                    "alert_description": "Limits cannot be increased for your business <BUSINESS_PORTFOLIO_NAME>. "
                    "Use WhatsApp Business platform actively for several days and follow our messaging policies.",
                },
            },
            severity="warning",
        ),
        # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/phone_number_quality_update
        FieldExample(
            "throughput upgrade",
            "phone_number_quality_update",
            f"{REFERENCE}/phone_number_quality_update",
            {"display_phone_number": DISPLAY_NUMBER, "event": "THROUGHPUT_UPGRADE", "current_limit": "TIER_UNLIMITED"},
            severity="info",
        ),
        # Same page's syntax for a messaging limit change (old_limit "only included for messaging
        # limit changes"; current_limit "will be removed in February, 2026", so absent, and
        # max_daily_conversations_per_business in its place), with the DOWNGRADE event of the
        # page's earlier versions: a lowered limit.
        FieldExample(
            "messaging limit lowered",
            "phone_number_quality_update",
            f"{REFERENCE}/phone_number_quality_update",
            {
                "display_phone_number": DISPLAY_NUMBER,
                "event": "DOWNGRADE",
                "old_limit": "TIER_10K",
                "max_daily_conversations_per_business": "TIER_2K",
            },
            severity="critical",
        ),
        # https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/business_capability_update
        FieldExample(
            "business capability",
            "business_capability_update",
            f"{REFERENCE}/business_capability_update",
            {"max_daily_conversations_per_business": 2000, "max_phone_numbers_per_waba": 25},
            severity="info",
        ),
    ]
