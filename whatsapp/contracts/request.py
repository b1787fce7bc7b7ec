"""The v1 AI-request event contract: what we publish on `ai.process.request` for each inbound message.

We are the producer here and the AI service (or our reference classifier) the consumer, so both
sides validate with this one module: the outbox relay before it publishes, the classifier when it
consumes. The ids are derived, not invented, so that a redelivered webhook or a relay that
publishes twice after a crash yields the same `processing_id`, which ingest already dedupes.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from pydantic import Field, ValidationError

from whatsapp.contracts.errors import UNSUPPORTED_SCHEMA, ContractError, format_error, invalid
from whatsapp.contracts.fields import Customer, Identifier, IsoDatetime, Strict
from whatsapp.contracts.json_input import read_object, scan
from whatsapp.contracts.result import SCHEMA_VERSION

# Meta's message types are lower-case words (text, image, interactive, ...); new ones appear
# without notice, so any such word is accepted and the consumer decides what it understands.
_MESSAGE_TYPE_PATTERN = r"^[a-z_]{1,32}$"
# The prefix marks ids we derived from a WhatsApp message, so they can never collide with
# processing ids an upstream producer makes up.
_PROCESSING_ID_PREFIX = "wa."


class Media(Strict):
    id: Annotated[str, Field(min_length=1, max_length=256)]
    mime_type: Annotated[str, Field(max_length=255)] | None = None
    caption: Annotated[str, Field(max_length=4096)] | None = None
    filename: Annotated[str, Field(max_length=255)] | None = None


class RequestMessage(Strict):
    id: Annotated[str, Field(min_length=1, max_length=256)]
    type: Annotated[str, Field(pattern=_MESSAGE_TYPE_PATTERN)]
    # Text, a button's or an interactive reply's title, or a media caption; "" when there is none.
    text: Annotated[str, Field(max_length=4096)] = ""
    media: Media | None = None
    received_at: IsoDatetime


class AIRequestEvent(Strict):
    schema_version: int
    processing_id: Annotated[Identifier, Field(max_length=128)]
    business_id: Annotated[Identifier, Field(max_length=64)]
    tenant_id: Annotated[str, Field(min_length=1, max_length=64)]
    lead_id: Annotated[Identifier, Field(max_length=64)]
    customer: Customer
    message: RequestMessage


def processing_id_for(wamid: str) -> str:
    """The processing id of the request made from one WhatsApp message, the same on every retry.

    Hashed because a wamid may hold characters the id alphabet refuses (base64's `=`, `/`, `+`).
    """
    return _PROCESSING_ID_PREFIX + hashlib.sha256(wamid.encode("utf-8")).hexdigest()[:40]


def parse_request(value: bytes | None) -> AIRequestEvent:
    """Validate raw Kafka record bytes of a request event. Raises ContractError."""
    data = read_object(value)
    # Duplicate keys, infinite numbers and giant integers anywhere: the same walk as for results.
    malformed, _ = scan(data, frozenset(), frozenset())
    if malformed:
        raise invalid(sorted(malformed))
    return validate_request(data)


def validate_request(data: dict[str, Any]) -> AIRequestEvent:
    """Validate a request already decoded (the relay checks what it built before publishing)."""
    version = data.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise ContractError(UNSUPPORTED_SCHEMA, [f"schema_version: must be {SCHEMA_VERSION}"])
    try:
        return AIRequestEvent.model_validate(data)
    except ValidationError as exc:
        raise invalid([format_error(error) for error in exc.errors(include_url=False, include_input=False)]) from None


def to_request_payload(event: AIRequestEvent) -> dict[str, Any]:
    """The validated request as plain JSON types, ready to publish or store."""
    return event.model_dump(mode="json", exclude_none=True)
