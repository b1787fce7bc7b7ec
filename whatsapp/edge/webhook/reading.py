"""Typed reads of Meta's JSON that say where a value is wrong, never what it holds: the
reasons are logged and shown in the admin, and a value may be what a customer wrote."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


class Unreadable(ValueError):
    """One item (a change, a message) cannot be read; the reason is safe to log."""


def read_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Unreadable(f"{where or 'body'} must be an object, got {kind_of(value)}")
    return value


def read_list(container: dict[str, Any], key: str, where: str, *, required: bool = True) -> list[Any]:
    value = container.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise Unreadable(f"{path(where, key)} must be a list, got {kind_of(value)}")
    return value


def object_at(container: dict[str, Any], key: str) -> dict[str, Any]:
    """A nested object that is only a hint (metadata, a profile): {} when absent or not one."""
    value = container.get(key)
    return value if isinstance(value, dict) else {}


def list_at(container: dict[str, Any], key: str) -> list[Any]:
    """A list that may be absent: [] when absent or not a list (the caller notes the latter)."""
    value = container.get(key)
    return value if isinstance(value, list) else []


def read_id(container: dict[str, Any], key: str, where: str, *, max_chars: int = 256) -> str:
    """An id: present, a string, and no longer than the column that keeps it."""
    value = container.get(key)
    if not isinstance(value, str) or not value:
        raise Unreadable(f"{path(where, key)} must be a non-empty string, got {kind_of(value)}")
    if len(value) > max_chars:
        raise Unreadable(f"{path(where, key)} is longer than {max_chars} characters")
    return storable(value)


def optional_id(container: dict[str, Any], key: str, *, max_chars: int = 256) -> str:
    """An id that may be absent: anything but a string of a sane length reads as absent."""
    value = container.get(key)
    if isinstance(value, str) and 0 < len(value) <= max_chars:
        return storable(value)
    return ""


def optional_text(container: dict[str, Any], key: str, where: str) -> str:
    value = container.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Unreadable(f"{path(where, key)} must be a string, got {kind_of(value)}")
    return storable(value)


def read_timestamp(message: dict[str, Any], where: str) -> datetime:
    raw = message.get("timestamp")
    if isinstance(raw, str) and raw.isascii() and raw.isdigit():
        seconds = int(raw)
    elif isinstance(raw, int) and not isinstance(raw, bool):
        seconds = raw
    else:
        raise Unreadable(f"{where}.timestamp must be unix seconds as a string")
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise Unreadable(f"{where}.timestamp is out of range") from None


def storable(value: str) -> str:
    """Text Postgres can hold: JSON may carry a NUL or a lone surrogate (\\u0000, \\ud800),
    which a text column refuses; each becomes U+FFFD rather than failing the delivery."""
    if value.isascii() and "\x00" not in value:
        return value
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def kind_of(value: Any) -> str:
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
