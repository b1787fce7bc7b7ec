"""Reading a Kafka record's bytes as JSON strictly, for both event contracts.

A document that is valid JSON only to a lenient parser is refused: a key given twice (json
keeps the last one silently), NaN or Infinity, a number that overflows to infinity, an
integer too long to convert. What PostgreSQL cannot store (NUL characters, unpaired
surrogates, unbounded nesting) is found in the same single walk, since it runs for every
record ingest reads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from whatsapp.contracts.errors import invalid

MAX_VALUE_BYTES = 262_144
# More objects and arrays (counted as `{` and `[` bytes) than any real event needs.
MAX_CONTAINERS = 20_000

# Deeper documents are refused up front: nothing in the contract nests this far, and
# unbounded nesting in kept-but-ignored keys would only cause trouble when serialised again.
_MAX_DEPTH = 32
# A key named in an error line (a duplicate key) is shown up to this many characters.
_MAX_ECHOED_KEY = 64
# Unknown entity keys are kept in the stored payload, so they are bounded too: how many keys
# entities may hold, and how long any key inside entities may be (keys also appear in error lines).
_MAX_ENTITY_KEYS = 32
_MAX_ENTITY_KEY_CHARS = 64
# Python's own default limit for converting integers to and from text: a longer literal cannot
# be parsed (or written back as JSON) without changing an interpreter-wide setting.
_MAX_INT_DIGITS = 4300


def read_object(value: bytes | None) -> dict[str, Any]:
    """The record's value as a JSON object, or ContractError (invalid_payload). The cheap,
    value-free checks run first so that a huge or garbled record is refused before any
    parsing work."""
    if not value:
        raise invalid("value: empty record")
    value = bytes(value)
    if len(value) > MAX_VALUE_BYTES:
        raise invalid(f"value: {len(value)} bytes exceeds the {MAX_VALUE_BYTES}-byte limit")
    # Before parsing: 256 KiB of `{}` is 87,000 objects for json to build and scan to walk.
    # Counting brackets in the raw bytes (those inside strings too, so an upper bound) is
    # cheap, and a real event holds a few dozen containers, plus whatever brackets a
    # customer typed into 4,096 characters of text.
    containers = value.count(b"{") + value.count(b"[")
    if containers > MAX_CONTAINERS:
        raise invalid(f"value: {containers} JSON objects and arrays exceed the limit of {MAX_CONTAINERS}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid(f"value: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        data = json.loads(text, object_pairs_hook=_object, parse_int=_parse_int, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise invalid(f"value: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise invalid(f"value: must be a JSON object, got {_json_type(data)}")
    return data


def scan(
    data: dict[str, Any], kept_fields: frozenset[str], entity_fields: frozenset[str]
) -> tuple[list[str], list[str]]:
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
            extra = check_keys and path[0] == "entities" and (len(path) == 1 or path[1] not in entity_fields)
            if extra and len(path) == 1 and len(node) > _MAX_ENTITY_KEYS:
                unstorable.append(f"entities: must have at most {_MAX_ENTITY_KEYS} keys")
            items = node.items()
        else:
            check_keys = extra = False
            items = enumerate(node)
        for position, (key, item) in enumerate(items, 1):
            child_kept = kept if path else key in kept_fields
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
