"""The v1 AI-result event contract: the one place that decides what a Kafka record may contain.

Everything downstream (lead updates, actions, the DLQ) trusts the models here, so the checks
are strict: wrong types are refused rather than coerced, because a producer that sends "1"
for an int is broken and silently fixing it would hide that. Error lines name the field and
the rule but never echo input values, since customer data must not leak into logs or the DLQ.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from whatsapp.contracts.errors import (
    INVALID_PAYLOAD,
    UNSUPPORTED_SCHEMA,
    ContractError,
    capped,
    format_error,
    invalid,
)
from whatsapp.contracts.fields import LANGUAGE_PATTERN, Customer, Identifier, IsoDatetime, Strict
from whatsapp.contracts.json_input import MAX_VALUE_BYTES, read_object, scan

__all__ = [
    "INVALID_PAYLOAD",
    "MAX_VALUE_BYTES",
    "SCHEMA_VERSION",
    "UNSUPPORTED_SCHEMA",
    "AIResultEvent",
    "ContractError",
    "Customer",
    "Entities",
    "Intent",
    "parse_event",
    "to_payload",
]

SCHEMA_VERSION = 1

# Free text the upstream contract document sets no limit for; these are ours (see README).
_MAX_INTENT_CHARS = 64
_MAX_PRODUCT_NAME_CHARS = 256
_MAX_SKU_CHARS = 64


# Not StrEnum: str() and format() of a member give "Intent.X" here, and StrEnum would make
# them give the value, changing whatever formats a member.
class Intent(str, enum.Enum):  # noqa: UP042 - see above
    ORDER_REQUEST = "ORDER_REQUEST"
    PRICING_INQUIRY = "PRICING_INQUIRY"
    COMPLAINT = "COMPLAINT"
    AVAILABILITY_INQUIRY = "AVAILABILITY_INQUIRY"
    SCHEDULE_CALL = "SCHEDULE_CALL"
    UNKNOWN = "UNKNOWN"


class Product(Strict):
    sku: Annotated[str, Field(max_length=_MAX_SKU_CHARS)] | None = None
    name: Annotated[str, Field(max_length=_MAX_PRODUCT_NAME_CHARS)]
    quantity: Annotated[int, Field(ge=1, le=10_000)] | None = None


class Entities(Strict):
    # Unknown entity keys are kept so that the stored payload loses nothing the AI produced.
    model_config = ConfigDict(strict=True, extra="allow")

    products: Annotated[list[Product], Field(max_length=50)] = []
    preferred_time: IsoDatetime | None = None
    severity: Literal["low", "medium", "high"] | None = None
    order_reference: Annotated[str, Field(max_length=64)] | None = None
    language: Annotated[str, Field(max_length=35, pattern=LANGUAGE_PATTERN)] | None = None


class Message(Strict):
    text: Annotated[str, Field(max_length=4096)]
    received_at: IsoDatetime


class AIInfo(Strict):
    model: Annotated[str, Field(max_length=128)] | None = None
    # Bounded so the duration histogram never meets an int too large for a float.
    processing_ms: Annotated[int, Field(ge=0, le=86_400_000)] | None = None


class AIResultEvent(Strict):
    schema_version: int
    processing_id: Annotated[Identifier, Field(max_length=128)]
    lead_id: Annotated[Identifier, Field(max_length=64)]
    business_id: Annotated[Identifier, Field(max_length=64)]
    tenant_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    message_id: Annotated[str, Field(max_length=256)] | None = None
    customer: Customer
    message: Message
    intent: Intent
    # What the producer actually sent, so an intent we mapped to UNKNOWN can still be inspected.
    intent_raw: Annotated[str, Field(max_length=_MAX_INTENT_CHARS)] = ""
    confidence: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    entities: Entities = Field(default_factory=Entities)
    ai: AIInfo | None = None

    @model_validator(mode="before")
    @classmethod
    def _keep_raw_intent(cls, data: Any) -> Any:
        """Remember the sent intent; a stored payload that already has intent_raw keeps it."""
        intent = data.get("intent") if isinstance(data, dict) else None
        # An overlong intent is reported once, on intent, not again on its copy.
        if isinstance(intent, str) and "intent_raw" not in data and len(intent) <= _MAX_INTENT_CHARS:
            data = {**data, "intent_raw": intent}
        return data

    @field_validator("intent", mode="before")
    @classmethod
    def _map_unknown_intent(cls, value: Any) -> Any:
        """A new intent on the AI side must not stop the pipeline, so it degrades to UNKNOWN."""
        if not isinstance(value, str):
            raise PydanticCustomError("string_type", "must be a string")
        if len(value) > _MAX_INTENT_CHARS:
            raise PydanticCustomError(
                "string_too_long", "must be at most {max_length} characters", {"max_length": _MAX_INTENT_CHARS}
            )
        try:
            return Intent(value)
        except ValueError:
            return Intent.UNKNOWN

    @field_validator("schema_version")
    @classmethod
    def _only_v1(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise PydanticCustomError("unsupported_schema", "must be 1")
        return value


def parse_event(value: bytes | None) -> AIResultEvent:
    """Validate raw Kafka record bytes. Raises ContractError.

    The cheap, value-free checks run first so that a huge or garbled record is refused before
    any parsing work. A document that is valid JSON only to a lenient parser (duplicate keys,
    numbers out of range) is refused next, whatever its version: which of two schema_version
    values counts is exactly the ambiguity to refuse. Then the schema version is judged before
    the fields, because a v2 record is not wrong, just not ours to read.
    """
    data = read_object(value)
    malformed, unstorable = scan(data, _KEPT_FIELDS, _ENTITY_FIELDS)
    if malformed:
        raise invalid(sorted(malformed))
    _check_schema_version(data)

    # Only contract fields are validated and kept; intent_raw is ours, so a sent one is ignored.
    known = {key: item for key, item in data.items() if key in _KEPT_FIELDS}
    problems = sorted(unstorable)
    try:
        event = AIResultEvent.model_validate(known)
    except ValidationError as exc:
        problems += [format_error(error) for error in exc.errors(include_url=False, include_input=False)]
    if problems:
        raise invalid(problems)
    return event


def to_payload(event: AIResultEvent) -> dict[str, Any]:
    """The validated event as plain JSON types, ready for a JSONField or the DLQ."""
    payload = event.model_dump(mode="json")
    # The 2026-12 customer fields only when given, so a v1 event without them reads as before.
    payload["customer"] = {
        key: value
        for key, value in payload["customer"].items()
        if value is not None or key not in _OPTIONAL_CUSTOMER_KEYS
    }
    return payload


_OPTIONAL_CUSTOMER_KEYS = frozenset({"user_id", "parent_user_id", "username"})


def _check_schema_version(data: dict[str, Any]) -> None:
    if "schema_version" not in data:
        raise invalid("schema_version: field required")
    version = data["schema_version"]
    if type(version) is not int:  # bool is an int subclass and must not pass as 1
        raise invalid("schema_version: must be an integer")
    if version != SCHEMA_VERSION:
        lines = capped([f"schema_version: {version} is not supported (expected {SCHEMA_VERSION})"])
        raise ContractError(UNSUPPORTED_SCHEMA, lines)


_KEPT_FIELDS = frozenset(AIResultEvent.model_fields) - {"intent_raw"}
_ENTITY_FIELDS = frozenset(Entities.model_fields)
