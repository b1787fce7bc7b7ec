"""The v1 AI-result event contract: the one place that decides what a Kafka record may contain.

Everything downstream (lead updates, actions, the DLQ) trusts the models here, so the checks
are strict: wrong types are refused rather than coerced, because a producer that sends "1"
for an int is broken and silently fixing it would hide that. Error lines name the field and
the rule but never echo input values, since customer data must not leak into logs or the DLQ.
"""

from __future__ import annotations

import enum
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

MAX_VALUE_BYTES = 262_144
SCHEMA_VERSION = 1

INVALID_PAYLOAD = "invalid_payload"
UNSUPPORTED_SCHEMA = "unsupported_schema"

# Deeper documents are refused up front: nothing in the contract nests this far, and
# unbounded nesting in kept-but-ignored keys would only cause trouble when serialised again.
_MAX_DEPTH = 32
# A bad record can fail in hundreds of places; the first few lines are enough to fix it.
_MAX_ERROR_LINES = 20
_MAX_LINE_CHARS = 300

_ID_PATTERN = r"^[A-Za-z0-9._:-]+$"
_WA_ID_PATTERN = r"^[0-9]{7,15}$"
_LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"

# Pattern errors get a human rule instead of the raw regex.
_PATTERN_RULES = {
    _ID_PATTERN: "must contain only A-Z a-z 0-9 . _ : -",
    _WA_ID_PATTERN: "must be 7-15 digits",
    _LANGUAGE_PATTERN: "must be a BCP-47 language tag such as en or pt-BR",
}


def _iso_datetime(value: Any) -> Any:
    """Parse ISO-8601 strings ourselves so strict mode can still refuse numbers and other types."""
    if not isinstance(value, str):
        if isinstance(value, datetime):
            return value
        raise PydanticCustomError("datetime_type", "must be an ISO-8601 datetime string")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError("datetime_parsing", "must be an ISO-8601 datetime") from None


IsoDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_datetime)]
Identifier = Annotated[str, Field(min_length=1, pattern=_ID_PATTERN)]


class Intent(str, enum.Enum):
    ORDER_REQUEST = "ORDER_REQUEST"
    PRICING_INQUIRY = "PRICING_INQUIRY"
    COMPLAINT = "COMPLAINT"
    AVAILABILITY_INQUIRY = "AVAILABILITY_INQUIRY"
    SCHEDULE_CALL = "SCHEDULE_CALL"
    UNKNOWN = "UNKNOWN"


class _Strict(BaseModel):
    # Unknown keys are ignored so producers can add fields before consumers know them.
    model_config = ConfigDict(strict=True, extra="ignore")


class Product(_Strict):
    sku: str | None = None
    name: str
    quantity: Annotated[int, Field(ge=1, le=10_000)] | None = None


class Entities(_Strict):
    # Unknown entity keys are kept so that the stored payload loses nothing the AI produced.
    model_config = ConfigDict(strict=True, extra="allow")

    products: Annotated[list[Product], Field(max_length=50)] = []
    preferred_time: IsoDatetime | None = None
    severity: Literal["low", "medium", "high"] | None = None
    order_reference: Annotated[str, Field(max_length=64)] | None = None
    language: Annotated[str, Field(max_length=35, pattern=_LANGUAGE_PATTERN)] | None = None


class Customer(_Strict):
    wa_id: Annotated[str, Field(pattern=_WA_ID_PATTERN)]
    name: Annotated[str, Field(max_length=256)] | None = None


class Message(_Strict):
    text: Annotated[str, Field(max_length=4096)]
    received_at: IsoDatetime


class AIInfo(_Strict):
    model: Annotated[str, Field(max_length=128)] | None = None
    processing_ms: Annotated[int, Field(ge=0)] | None = None


class AIResultEvent(_Strict):
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
    intent_raw: str = ""
    confidence: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    entities: Entities = Field(default_factory=Entities)
    ai: AIInfo | None = None

    @model_validator(mode="before")
    @classmethod
    def _keep_raw_intent(cls, data: Any) -> Any:
        """Remember the sent intent; a stored payload that already has intent_raw keeps it."""
        if isinstance(data, dict) and "intent_raw" not in data and isinstance(data.get("intent"), str):
            data = {**data, "intent_raw": data["intent"]}
        return data

    @field_validator("intent", mode="before")
    @classmethod
    def _map_unknown_intent(cls, value: Any) -> Any:
        """A new intent on the AI side must not stop the pipeline, so it degrades to UNKNOWN."""
        if not isinstance(value, str):
            raise PydanticCustomError("string_type", "must be a string")
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


class ContractError(Exception):
    """Why a record was refused, in a form safe to log and to store with the dead letter."""

    def __init__(self, reason: str, errors: list[str]) -> None:
        self.reason = reason
        self.errors = errors
        super().__init__(str(self))

    def __str__(self) -> str:
        return "; ".join(self.errors)

    def __reduce__(self) -> tuple[Any, ...]:
        # Celery and multiprocessing pickle exceptions; the default would lose reason and errors.
        return (type(self), (self.reason, self.errors))


def parse_event(value: bytes | None) -> AIResultEvent:
    """Validate raw Kafka record bytes. Raises ContractError.

    The cheap, value-free checks run first so that a huge or garbled record is refused before
    any parsing work, and the schema version is judged before the fields because a v2 record
    is not wrong, just not ours to read.
    """
    if not value:
        raise _invalid("value: empty record")
    value = bytes(value)
    if len(value) > MAX_VALUE_BYTES:
        raise _invalid(f"value: {len(value)} bytes exceeds the {MAX_VALUE_BYTES}-byte limit")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(f"value: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise _invalid(f"value: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _invalid(f"value: must be a JSON object, got {_json_type(data)}")

    _check_schema_version(data)

    # Only contract fields are validated and kept; intent_raw is ours, so a sent one is ignored.
    known = {key: item for key, item in data.items() if key in AIResultEvent.model_fields and key != "intent_raw"}
    problems = _unstorable(known)
    try:
        event = AIResultEvent.model_validate(known)
    except ValidationError as exc:
        problems += [_format_error(error) for error in exc.errors(include_url=False, include_input=False)]
    if problems:
        raise _invalid(problems)
    return event


def to_payload(event: AIResultEvent) -> dict[str, Any]:
    """The validated event as plain JSON types, ready for a JSONField or the DLQ."""
    return event.model_dump(mode="json")


def _check_schema_version(data: dict[str, Any]) -> None:
    if "schema_version" not in data:
        raise _invalid("schema_version: field required")
    version = data["schema_version"]
    if type(version) is not int:  # bool is an int subclass and must not pass as 1
        raise _invalid("schema_version: must be an integer")
    if version != SCHEMA_VERSION:
        raise ContractError(
            UNSUPPORTED_SCHEMA,
            [f"schema_version: {version} is not supported (expected {SCHEMA_VERSION})"],
        )


def _unstorable(data: Any) -> list[str]:
    """Find what would validate but then fail to store.

    PostgreSQL refuses NUL characters in text and jsonb, unpaired surrogates (legal as JSON
    escapes) cannot be encoded as UTF-8, and kept entity keys nested without bound exceed the
    serialiser's depth limit; each would turn the record into a poison message at save time
    instead of a clean rejection here.
    """
    problems: list[str] = []
    stack: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while stack:
        node, path = stack.pop()
        where = ".".join(path) or "value"
        if len(path) > _MAX_DEPTH:
            problems.append(f"{where}: nested deeper than {_MAX_DEPTH} levels")
        elif isinstance(node, dict):
            for key, item in node.items():
                if not _storable(key):
                    problems.append(f"{where}: key contains a NUL character or an unpaired surrogate")
                    continue
                stack.append((item, (*path, key)))
        elif isinstance(node, list):
            stack.extend((item, (*path, str(index))) for index, item in enumerate(node))
        elif isinstance(node, str) and not _storable(node):
            problems.append(f"{where}: contains a NUL character or an unpaired surrogate")
    return sorted(problems)


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _format_error(error: ErrorDetails) -> str:
    """Turn a pydantic error into "<dotted.loc>: <rule>" without the offending value."""
    where = ".".join(str(part) for part in error["loc"]) or "value"
    return f"{where}: {_rule(error)}"


def _rule(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return "field required"
    if kind in ("string_type", "string_sub_type"):
        return "must be a string"
    if kind in ("int_type", "int_from_float"):
        return "must be an integer"
    if kind == "float_type":
        return "must be a number"
    if kind == "finite_number":
        return "must be a finite number"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return "must be an object"
    if kind == "list_type":
        return "must be an array"
    if kind == "string_too_short":
        return f"must be at least {ctx.get('min_length')} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items"
    if kind == "string_pattern_mismatch":
        return _PATTERN_RULES.get(str(ctx.get("pattern")), "has an invalid format")
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"must be <= {ctx.get('le')}"
    if kind == "timezone_aware":
        return "must include a timezone offset"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    # Custom errors carry our own wording; pydantic's other messages state the rule, not the input.
    return error["msg"]


def _invalid(errors: str | list[str]) -> ContractError:
    lines = [errors] if isinstance(errors, str) else list(errors)
    # Unknown entity keys appear in paths; cap the lines so a giant key cannot flood the logs.
    lines = [line if len(line) <= _MAX_LINE_CHARS else line[: _MAX_LINE_CHARS - 3] + "..." for line in lines]
    if len(lines) > _MAX_ERROR_LINES:
        hidden = len(lines) - _MAX_ERROR_LINES
        lines = [*lines[:_MAX_ERROR_LINES], f"value: {hidden} more problems not shown"]
    return ContractError(INVALID_PAYLOAD, lines)


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; real JSON and PostgreSQL do not.
    raise ValueError(f"{name} is not allowed")


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "null"
