"""The v1 AI-result event contract: the one place that decides what a Kafka record may contain.

Everything downstream (lead updates, actions, the DLQ) trusts the models here, so the checks
are strict: wrong types are refused rather than coerced, because a producer that sends "1"
for an int is broken and silently fixing it would hide that. Error lines name the field and
the rule but never echo input values, since customer data must not leak into logs or the DLQ.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
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
# A key named in an error line (a duplicate key) is shown up to this many characters.
_MAX_ECHOED_KEY = 64

# Free text the upstream contract document sets no limit for; these are ours (see README).
_MAX_INTENT_CHARS = 64
_MAX_PRODUCT_NAME_CHARS = 256
_MAX_SKU_CHARS = 64
# Unknown entity keys are kept in the stored payload, so they are bounded too: how many keys
# entities may hold, and how long any key inside entities may be (keys also appear in error lines).
_MAX_ENTITY_KEYS = 32
_MAX_ENTITY_KEY_CHARS = 64
# Python's own default limit for converting integers to and from text: a longer literal cannot
# be parsed (or written back as JSON) without changing an interpreter-wide setting.
_MAX_INT_DIGITS = 4300
# PostgreSQL's timestamptz input takes offsets up to 15:59:59 either way (checked against the
# server); pydantic writes offsets as hours and minutes only, so seconds would be lost when the
# payload is stored. ISO 8601 and RFC 3339 offsets are whole minutes anyway.
_MAX_UTC_OFFSET = timedelta(hours=15, minutes=59)

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


def _storable_moment(value: datetime) -> datetime:
    """Refuse what would validate but then fail when stored in a timestamptz or compared in UTC."""
    offset = value.utcoffset()
    if offset is not None and (abs(offset) > _MAX_UTC_OFFSET or offset % timedelta(minutes=1)):
        raise PydanticCustomError("timezone_offset", "time-zone offset must be whole minutes between -15:59 and +15:59")
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError("datetime_range", "must be within the years 1-9999 in UTC") from None
    return value


IsoDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_datetime), AfterValidator(_storable_moment)]
Identifier = Annotated[str, Field(min_length=1, pattern=_ID_PATTERN)]


# Not StrEnum: str() and format() of a member give "Intent.X" here, and StrEnum would make
# them give the value, changing whatever formats a member.
class Intent(str, enum.Enum):  # noqa: UP042 - see above
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
    sku: Annotated[str, Field(max_length=_MAX_SKU_CHARS)] | None = None
    name: Annotated[str, Field(max_length=_MAX_PRODUCT_NAME_CHARS)]
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
    # Bounded so the duration histogram never meets an int too large for a float.
    processing_ms: Annotated[int, Field(ge=0, le=86_400_000)] | None = None


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
    any parsing work. A document that is valid JSON only to a lenient parser (duplicate keys,
    numbers out of range) is refused next, whatever its version: which of two schema_version
    values counts is exactly the ambiguity to refuse. Then the schema version is judged before
    the fields, because a v2 record is not wrong, just not ours to read.
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
        data = json.loads(text, object_pairs_hook=_object, parse_int=_parse_int, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise _invalid(f"value: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _invalid(f"value: must be a JSON object, got {_json_type(data)}")

    malformed, unstorable = _scan(data)
    if malformed:
        raise _invalid(sorted(malformed))
    _check_schema_version(data)

    # Only contract fields are validated and kept; intent_raw is ours, so a sent one is ignored.
    known = {key: item for key, item in data.items() if key in _KEPT_FIELDS}
    problems = sorted(unstorable)
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
        lines = _capped([f"schema_version: {version} is not supported (expected {SCHEMA_VERSION})"])
        raise ContractError(UNSUPPORTED_SCHEMA, lines)


_KEPT_FIELDS = frozenset(AIResultEvent.model_fields) - {"intent_raw"}
_ENTITY_FIELDS = frozenset(Entities.model_fields)


def _scan(data: dict[str, Any]) -> tuple[list[str], list[str]]:
    """One walk over the whole document for what pydantic cannot see, as (malformed, unstorable).

    Malformed, anywhere in the document: a key given twice (json keeps the last one silently),
    a number that overflowed to infinity (1e999; PostgreSQL's jsonb has no infinity, and the
    JSON encoder would write it as null or refuse it), an integer too long to convert.

    Unstorable, only in the parts that are kept: PostgreSQL refuses NUL characters in text and
    jsonb, unpaired surrogates (legal as JSON escapes) cannot be encoded as UTF-8, kept entity
    keys nested without bound exceed the serialiser's depth limit, and unknown entity keys
    must stay few and short. Each would otherwise become a poison message at save time, or an
    unbounded blob in every stored copy, instead of a clean rejection here.

    A single walk because this runs for every record ingest reads.
    """
    malformed: list[str] = []
    unstorable: list[str] = []
    # Only objects and arrays go on the stack; scalars are checked where they are found, and a
    # path is spelled out only for a problem. kept is False under top-level keys that are
    # dropped, and below a problem already reported, so one bad subtree gives one line.
    # dict[Any, Any]: walking objects and arrays alike, a key is a str or a list index.
    stack: list[tuple[dict[Any, Any] | list[Any], tuple[str | int, ...], bool]] = [(data, (), True)]
    while stack:
        node, path, kept = stack.pop()
        if kept and len(path) > _MAX_DEPTH:
            unstorable.append(f"{_where(path)}: nested deeper than {_MAX_DEPTH} levels")
            kept = False
        items: Iterable[tuple[Any, Any]]
        if isinstance(node, dict):
            if isinstance(node, _DuplicateKeys):
                malformed.extend(f"{_where(path)}: duplicate key {_echo_key(key)}" for key in node.duplicates)
            # Top-level keys are contract names or dropped; below, every kept key is stored.
            check_keys = kept and bool(path)
            # Keys of entities itself and of the unknown entities below it are stored as sent.
            extra = check_keys and path[0] == "entities" and (len(path) == 1 or path[1] not in _ENTITY_FIELDS)
            if extra and len(path) == 1 and len(node) > _MAX_ENTITY_KEYS:
                unstorable.append(f"entities: must have at most {_MAX_ENTITY_KEYS} keys")
            items = node.items()
        else:
            check_keys = extra = False
            items = enumerate(node)
        for position, (key, item) in enumerate(items, 1):
            child_kept = kept if path else key in _KEPT_FIELDS
            if check_keys and (not _storable(key) or (extra and len(key) > _MAX_ENTITY_KEY_CHARS)):
                problem = (
                    "contains a NUL character or an unpaired surrogate"
                    if not _storable(key)
                    else f"is longer than {_MAX_ENTITY_KEY_CHARS} characters"
                )
                unstorable.append(f"{_where(path)}: key {position} {problem}")
                child_kept = False
            kind = type(item)
            if kind is str:
                if child_kept and not _storable(item):
                    unstorable.append(f"{_where((*path, key))}: contains a NUL character or an unpaired surrogate")
            elif kind is dict or kind is list or kind is _DuplicateKeys:
                stack.append((item, (*path, key), child_kept))
            elif kind is float:
                if not math.isfinite(item):
                    malformed.append(f"{_where((*path, key))}: number out of range (must be finite)")
            elif kind is _LongInteger:
                malformed.append(f"{_where((*path, key))}: integer longer than {_MAX_INT_DIGITS} digits")
    return malformed, unstorable


def _where(path: tuple[str | int, ...]) -> str:
    """A dotted path safe to log and store: keys nobody limited yet are escaped and shortened."""
    if not path:
        return "value"
    return ".".join(
        str(part) if isinstance(part, int) or (len(part) <= _MAX_ECHOED_KEY and _storable(part)) else _escaped(part)
        for part in path
    )


def _echo_key(key: str) -> str:
    return _escaped(key) if len(key) > _MAX_ECHOED_KEY or not _storable(key) else repr(key)


def _escaped(key: str) -> str:
    # ascii() escapes NULs and surrogates, so the line itself can always be stored.
    shown = ascii(key[:_MAX_ECHOED_KEY])
    return shown if len(key) <= _MAX_ECHOED_KEY else shown + "..."


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    if text.isascii():  # the common case, and no surrogate is ASCII
        return True
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
    return ContractError(INVALID_PAYLOAD, _capped([errors] if isinstance(errors, str) else list(errors)))


def _capped(lines: list[str]) -> list[str]:
    # Unknown keys and numbers appear in lines; cap them so a giant one cannot flood the logs.
    lines = [line if len(line) <= _MAX_LINE_CHARS else line[: _MAX_LINE_CHARS - 3] + "..." for line in lines]
    if len(lines) > _MAX_ERROR_LINES:
        hidden = len(lines) - _MAX_ERROR_LINES
        lines = [*lines[:_MAX_ERROR_LINES], f"value: {hidden} more problems not shown"]
    return lines


class _DuplicateKeys(dict):
    """An object in which a key was given twice; it keeps the last value, as json does, and
    remembers the repeated keys so that _scan can report them with their path."""

    duplicates: list[str]


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object hook: a plain dict unless a key repeats (the common case costs a len())."""
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    repeated: dict[str, None] = {}  # a dict keeps the order in which keys were repeated
    for key, _ in pairs:
        if key in seen:
            repeated[key] = None
        seen.add(key)
    marked = _DuplicateKeys(obj)
    marked.duplicates = list(repeated)
    return marked


class _LongInteger:
    """Stands in for an integer literal too long to convert, so _scan can name where it is."""

    __slots__ = ()


def _parse_int(text: str) -> Any:
    if len(text) - text.startswith("-") > _MAX_INT_DIGITS:
        return _LongInteger()
    return int(text)


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
