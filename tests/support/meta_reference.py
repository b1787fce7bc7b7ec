"""Meta's documented webhook examples, one per message type, status and field we read.

Written from Meta's webhook reference (the "messages" webhook reference, one page per type,
under https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/,
the payload examples page, https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/payload-examples,
the field pages under .../webhooks/reference/<field>, and the business-scoped user ids page,
https://developers.facebook.com/documentation/business-messaging/whatsapp/business-scoped-user-ids),
with Meta's own example values for its placeholders. Only three things differ from the pages:
the phone-number id and account id are the test business's (Meta's own sample ids, as it
happens), each wamid is fresh so examples never collide, and timestamps are a minute ago,
so the tests do not depend on the day they were written.

Each message example says what the webhook makes of it (`state`): a row to publish, a system
notice applied where it is stored, or an UNREADABLE row kept with its path.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from devtools.meta import DISPLAY_NUMBER, PHONE_NUMBER_ID, WABA_ID

REFERENCE = "https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference"
MESSAGES_REFERENCE = f"{REFERENCE}/messages"
PAYLOAD_EXAMPLES = "https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/payload-examples"
BSUID_PAGE = "https://developers.facebook.com/documentation/business-messaging/whatsapp/business-scoped-user-ids"

# Meta's example values.
CUSTOMER = "16505551234"
CUSTOMER_NAME = "Sheena Nelson"
NEW_NUMBER = "16505556789"
BSUID = "US.13491208655302741918"
NEW_BSUID = "US.52901937201184453109"
PARENT_BSUID = "US.ENT.11815799212886844830"
USERNAME = "sheena.bakes"
MEDIA_SHA = "81d3bd8a8db4868c9520ed47186e8b7c5789e61ff79f7f834be6950b808a90d3"
CONTEXT_WAMID = "wamid.HBgLMTQxMjU1NTA4MjkVAgASGBQzQUNCNjk5RDUwNUZGMUZEM0VBRAA="

PUBLISHED = "PENDING"  # stored, to go out as a request event
APPLIED = "APPLIED"  # a system notice applied to the lead, never published
UNREADABLE = "UNREADABLE"


def minute_ago() -> str:
    return str(int(time.time()) - 60)


def fresh_wamid() -> str:
    return "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQ" + uuid.uuid4().hex.upper() + "AA="


@dataclass(frozen=True)
class MessageExample:
    name: str
    source: str
    # The message object, without from/id/timestamp (added per delivery).
    body: dict[str, Any]
    state: str
    stored_type: str = ""
    stored_text: str = ""
    # The customer as the contacts card names them; the defaults are Meta's example user.
    contact: dict[str, Any] = field(default_factory=lambda: {"profile": {"name": CUSTOMER_NAME}, "wa_id": CUSTOMER})
    sender: dict[str, Any] = field(default_factory=lambda: {"from": CUSTOMER})


MESSAGE_EXAMPLES: list[MessageExample] = [
    MessageExample(
        "text",
        f"{MESSAGES_REFERENCE}/text",
        {"type": "text", "text": {"body": "Does it come in another color?"}},
        PUBLISHED,
        "text",
        "Does it come in another color?",
    ),
    MessageExample(
        "image",
        f"{MESSAGES_REFERENCE}/image",
        {
            "type": "image",
            "image": {
                "caption": "Black jacket",
                "mime_type": "image/jpeg",
                "sha256": MEDIA_SHA,
                "id": "1003383421387256",
            },
        },
        PUBLISHED,
        "image",
    ),
    MessageExample(
        "video",
        f"{MESSAGES_REFERENCE}/video",
        {
            "type": "video",
            "video": {
                "caption": "Wall-mounted shelf",
                "mime_type": "video/mp4",
                "sha256": MEDIA_SHA,
                "id": "1166181691423743",
            },
        },
        PUBLISHED,
        "video",
    ),
    MessageExample(
        "audio",
        f"{MESSAGES_REFERENCE}/audio",
        {
            "type": "audio",
            "audio": {"mime_type": "audio/mpeg", "sha256": MEDIA_SHA, "id": "1003383421387256", "voice": False},
        },
        PUBLISHED,
        "audio",
    ),
    MessageExample(
        "voice",
        f"{MESSAGES_REFERENCE}/audio",
        {
            "type": "audio",
            "audio": {
                "mime_type": "audio/ogg; codecs=opus",
                "sha256": MEDIA_SHA,
                "id": "1003383421387257",
                "voice": True,
            },
        },
        PUBLISHED,
        "audio",
    ),
    MessageExample(
        "document",
        f"{MESSAGES_REFERENCE}/document",
        {
            "type": "document",
            "document": {
                "caption": "Lucky Shrub Invoice",
                "filename": "lucky-shrub-invoice.pdf",
                "mime_type": "application/pdf",
                "sha256": MEDIA_SHA,
                "id": "1003383421387258",
            },
        },
        PUBLISHED,
        "document",
    ),
    MessageExample(
        "sticker",
        f"{MESSAGES_REFERENCE}/sticker",
        {
            "type": "sticker",
            "sticker": {"mime_type": "image/webp", "sha256": MEDIA_SHA, "id": "1003383421387259", "animated": False},
        },
        PUBLISHED,
        "sticker",
    ),
    MessageExample(
        "reaction",
        f"{MESSAGES_REFERENCE}/reaction",
        {"type": "reaction", "reaction": {"message_id": CONTEXT_WAMID, "emoji": "\U0001f44d"}},
        PUBLISHED,
        "reaction",
    ),
    MessageExample(
        "reaction removed",
        f"{MESSAGES_REFERENCE}/reaction",  # "the emoji property will be omitted"
        {"type": "reaction", "reaction": {"message_id": CONTEXT_WAMID}},
        PUBLISHED,
        "reaction",
    ),
    MessageExample(
        "location",
        f"{MESSAGES_REFERENCE}/location",
        {
            "type": "location",
            "location": {
                "address": "1 Hacker Way, Menlo Park, CA 94025",
                "latitude": 37.483307,
                "longitude": -122.148981,
                "name": "Meta Headquarters",
                "url": "https://www.meta.com",
            },
        },
        PUBLISHED,
        "location",
    ),
    MessageExample(
        "contacts",
        f"{MESSAGES_REFERENCE}/contacts",
        {
            "type": "contacts",
            "contacts": [
                {
                    "addresses": [
                        {
                            "city": "Menlo Park",
                            "country": "United States",
                            "country_code": "us",
                            "state": "CA",
                            "street": "1 Hacker Way",
                            "type": "WORK",
                            "zip": "94025",
                        }
                    ],
                    "emails": [{"email": "bjohnson@example.com", "type": "WORK"}],
                    "name": {"formatted_name": "Barbara J. Johnson", "first_name": "Barbara", "last_name": "Johnson"},
                    "org": {"company": "Lucky Shrub", "department": "Legal", "title": "Lead Counsel"},
                    "phones": [{"phone": "+1 (415) 555-0123", "wa_id": "14155550123", "type": "MOBILE"}],
                    "urls": [{"url": "https://www.luckyshrub.com", "type": "WORK"}],
                }
            ],
        },
        PUBLISHED,
        "contacts",
    ),
    MessageExample(
        "button",
        f"{MESSAGES_REFERENCE}/button",
        {
            "context": {"from": DISPLAY_NUMBER, "id": CONTEXT_WAMID},
            "type": "button",
            "button": {"payload": "Unsubscribe from Promos", "text": "Unsubscribe from Promos"},
        },
        PUBLISHED,
        "button",
        "Unsubscribe from Promos",
    ),
    MessageExample(
        "interactive button reply",
        f"{MESSAGES_REFERENCE}/interactive",
        {
            "context": {"from": DISPLAY_NUMBER, "id": CONTEXT_WAMID},
            "type": "interactive",
            "interactive": {"type": "button_reply", "button_reply": {"id": "cancel-button", "title": "Cancel"}},
        },
        PUBLISHED,
        "interactive",
        "Cancel",
    ),
    MessageExample(
        "interactive list reply",
        f"{MESSAGES_REFERENCE}/interactive",
        {
            "context": {"from": DISPLAY_NUMBER, "id": CONTEXT_WAMID},
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
        PUBLISHED,
        "interactive",
        "Priority Mail Express",
    ),
    MessageExample(
        "interactive with no reply in it",
        f"{MESSAGES_REFERENCE}/interactive",  # the reply object is per type; none here
        {"context": {"from": DISPLAY_NUMBER, "id": CONTEXT_WAMID}, "type": "interactive", "interactive": {}},
        UNREADABLE,
    ),
    MessageExample(
        "order",
        f"{MESSAGES_REFERENCE}/order",
        {
            "type": "order",
            "order": {
                "catalog_id": "194836987003835",
                "text": "Can you deliver by Friday?",
                "product_items": [
                    {"product_retailer_id": "di9ozbzfi4", "quantity": 2, "item_price": 30, "currency": "USD"},
                    {"product_retailer_id": "nqryix03ez", "quantity": 1, "item_price": 25, "currency": "USD"},
                ],
            },
        },
        PUBLISHED,
        "order",
    ),
    MessageExample(
        "system: user changed number",
        f"{MESSAGES_REFERENCE}/system",
        {
            "type": "system",
            "system": {
                "body": f"User {CUSTOMER_NAME} changed from {CUSTOMER} to {NEW_NUMBER}",
                "wa_id": NEW_NUMBER,
                "type": "user_changed_number",
            },
        },
        APPLIED,
        "system",
    ),
    MessageExample(
        "system: user changed user id",
        BSUID_PAGE,
        {
            "type": "system",
            "system": {
                "body": f"User {CUSTOMER_NAME} changed their business-scoped user ID",
                "user_id": NEW_BSUID,
                "type": "user_changed_user_id",
            },
        },
        APPLIED,
        "system",
        contact={"profile": {"name": CUSTOMER_NAME, "username": USERNAME}, "user_id": BSUID},
        sender={"from_user_id": BSUID},
    ),
    MessageExample(
        "edit",
        f"{MESSAGES_REFERENCE}/edit",
        {
            "type": "edit",
            "edit": {
                "original_message_id": CONTEXT_WAMID,
                "message": {"type": "text", "text": {"body": "Make it 3 loaves, please"}},
            },
        },
        PUBLISHED,
        "edit",
    ),
    MessageExample(
        "revoke",
        f"{MESSAGES_REFERENCE}/revoke",
        {"type": "revoke", "revoke": {"original_message_id": CONTEXT_WAMID}},
        PUBLISHED,
        "revoke",
    ),
    MessageExample(
        "unsupported",
        f"{MESSAGES_REFERENCE}/unsupported",
        {
            "errors": [
                {
                    "code": 131051,
                    "title": "Message type unknown",
                    "message": "Message type unknown",
                    "error_data": {"details": "Message type is currently not supported."},
                }
            ],
            "type": "unsupported",
            "unsupported": {"type": "poll_update"},
        },
        PUBLISHED,
        "unsupported",
    ),
    MessageExample(
        "a message with errors (the older unknown type)",
        PAYLOAD_EXAMPLES,  # "Unknown messages"
        {
            "errors": [
                {
                    "code": 131051,
                    "details": "Message type is not currently supported",
                    "title": "Unsupported message type",
                }
            ],
            "type": "unknown",
        },
        PUBLISHED,
        "unknown",
    ),
    MessageExample(
        "username customer, no from",
        BSUID_PAGE,
        {"type": "text", "text": {"body": "How much is the sourdough?"}},
        PUBLISHED,
        "text",
        "How much is the sourdough?",
        contact={"profile": {"name": CUSTOMER_NAME, "username": USERNAME}, "user_id": BSUID},
        sender={"from_user_id": BSUID, "from_parent_user_id": PARENT_BSUID},
    ),
    MessageExample(
        "username customer, from holding the BSUID",
        BSUID_PAGE,
        {"type": "text", "text": {"body": "And the rye?"}},
        PUBLISHED,
        "text",
        "And the rye?",
        contact={"profile": {"name": CUSTOMER_NAME, "username": USERNAME}, "user_id": BSUID},
        sender={"from": BSUID},
    ),
]


def message(example: MessageExample, wamid: str | None = None) -> dict[str, Any]:
    return {**example.sender, "id": wamid or fresh_wamid(), "timestamp": minute_ago(), **example.body}


def messages_value(example: MessageExample, *messages: dict[str, Any]) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": PHONE_NUMBER_ID},
        "contacts": [example.contact],
        "messages": list(messages),
    }


def delivery(*changes: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """A whole delivery: one entry for the test business's account, one change per (field, value)."""
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": [{"value": value, "field": name} for name, value in changes]}],
    }


# --- statuses ----------------------------------------------------------------------------
STATUSES_SOURCE = f"{REFERENCE}/messages/status"


def status(wamid: str, name: str) -> dict[str, Any]:
    """Meta's status example for `name` (sent, delivered, read, failed)."""
    body: dict[str, Any] = {
        "id": wamid,
        "status": name,
        "timestamp": minute_ago(),
        "recipient_id": CUSTOMER,
        "recipient_user_id": BSUID,
    }
    if name in ("sent", "delivered"):
        body["conversation"] = {"id": "4ce5a8b7ab2bd6e4b7e9e0b0e7e3a5b1", "origin": {"type": "service"}}
        body["pricing"] = {
            "billable": False,
            "pricing_model": "PMP",
            "category": "service",
            "type": "free_customer_service",
        }
    if name == "failed":
        body["errors"] = [
            {
                "code": 131047,
                "title": "Re-engagement message",
                "message": "Re-engagement message",
                "error_data": {"details": "Message failed to send because more than 24 hours have passed."},
                "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
            }
        ]
    return body


def statuses_value(*statuses: dict[str, Any]) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": PHONE_NUMBER_ID},
        "statuses": list(statuses),
    }


# --- fields other than messages ----------------------------------------------------------
@dataclass(frozen=True)
class FieldExample:
    field: str
    source: str
    value: dict[str, Any]
    # The WebhookChange state the webhook gives it: APPLIED where the product uses it.
    state: str = "APPLIED"


TEMPLATE = {
    "message_template_id": 806312974732579,
    "message_template_name": "order_confirmation",
    "message_template_language": "en_US",
}


def field_examples() -> list[FieldExample]:
    metadata = {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": PHONE_NUMBER_ID}
    now = int(time.time()) - 60
    return [
        FieldExample(
            "message_template_status_update",
            f"{REFERENCE}/message_template_status_update",
            {**TEMPLATE, "event": "APPROVED", "reason": "NONE"},
        ),
        FieldExample(
            "message_template_quality_update",
            f"{REFERENCE}/message_template_quality_update",
            {**TEMPLATE, "previous_quality_score": "GREEN", "new_quality_score": "YELLOW"},
        ),
        FieldExample(
            "template_category_update",
            f"{REFERENCE}/template_category_update",
            {**TEMPLATE, "previous_category": "UTILITY", "new_category": "MARKETING"},
        ),
        FieldExample(
            "user_preferences",
            f"{REFERENCE}/user_preferences",
            {
                "messaging_product": "whatsapp",
                "metadata": metadata,
                "contacts": [{"profile": {"name": CUSTOMER_NAME}, "wa_id": CUSTOMER}],
                "user_preferences": [
                    {
                        "wa_id": CUSTOMER,
                        "detail": "User requested to stop marketing messages",
                        "category": "marketing_messages",
                        "value": "stop",
                        "timestamp": now,
                    }
                ],
            },
        ),
        FieldExample(
            "user_id_update",
            BSUID_PAGE,
            {
                "messaging_product": "whatsapp",
                "metadata": metadata,
                "user_id_update": [
                    {
                        "wa_id": CUSTOMER,
                        "detail": "User changed their business-scoped user ID",
                        "user_id": {"previous": BSUID, "current": NEW_BSUID},
                        "timestamp": str(now),
                    }
                ],
            },
        ),
        FieldExample(
            "account_update",
            f"{REFERENCE}/account_update",
            {
                "phone_number": DISPLAY_NUMBER,
                "event": "ACCOUNT_RESTRICTION",
                "restriction_info": [
                    {"restriction_type": "RESTRICTED_ADD_PHONE_NUMBER_ACTION", "expiration": now + 86400}
                ],
            },
        ),
        FieldExample(
            "account_alerts",
            f"{REFERENCE}/account_alerts",
            {
                "entity_type": "PHONE_NUMBER",
                "entity_id": PHONE_NUMBER_ID,
                "alert_info": {
                    "alert_severity": "WARNING",
                    "alert_status": "ACTIVE",
                    "alert_type": "INCREASED_CAPABILITIES_ELIGIBILITY_NEED_MORE_INFO",
                    "alert_description": "Your business needs more information to increase its messaging limit.",
                },
            },
        ),
        FieldExample(
            "phone_number_quality_update",
            f"{REFERENCE}/phone_number_quality_update",
            {"display_phone_number": DISPLAY_NUMBER, "event": "DOWNGRADE", "current_limit": "TIER_1K"},
        ),
        FieldExample(
            "business_capability_update",
            f"{REFERENCE}/business_capability_update",
            {"max_daily_conversation_per_phone": 250, "max_phone_numbers_per_business": 2},
        ),
    ]
