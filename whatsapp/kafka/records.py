"""A consumed Kafka record, detached from librdkafka, with whatever it carries kept in a storable form."""

from __future__ import annotations

import base64
import gc
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE


@dataclass(frozen=True)
class Record:
    """One consumed Kafka record, detached from librdkafka's message object.

    `timestamp` is the record's time as a datetime when it is one (positive, within
    Python's years 1-9999); `timestamp_ms` is the raw milliseconds librdkafka handed over
    whatever they are (None when the broker gave no timestamp), so a time past 9999 or
    before 1970 is kept as it came. `headers_error` says why the headers could not be
    read at all (see _read_headers)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: datetime | None = None
    headers: list[tuple[str | None, bytes | None]] = field(default_factory=list)
    timestamp_ms: int | None = None
    headers_error: str = ""

    @classmethod
    def from_message(cls, message: Any) -> Record:
        """Never raises on what the record carries: what cannot be converted is kept raw."""
        millis = _timestamp_millis(message)
        headers, headers_error = _read_headers(message)
        return cls(
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            value=message.value(),
            key=message.key(),
            timestamp=datetime_from_millis(millis),
            timestamp_ms=millis,
            headers=headers,
            headers_error=headers_error,
        )

    @property
    def coordinates(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)

    @property
    def millis(self) -> int | None:
        """The record's time in milliseconds since the epoch, raw if it has no datetime."""
        if self.timestamp_ms is not None:
            return self.timestamp_ms
        return int(self.timestamp.timestamp() * 1000) if self.timestamp is not None else None

    @property
    def unconverted_millis(self) -> int | None:
        """The raw milliseconds to store beside a missing datetime (kafka_timestamp_ms), else None."""
        return self.timestamp_ms if self.timestamp is None else None

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers:
            if key is not None and key.lower() == wanted and value is not None:
                return bytes(value).decode("utf-8", errors="replace")
        return None

    def headers_json(self) -> list[dict[str, Any]]:
        """Headers in a form Postgres's jsonb always takes and headers_from_json gives back
        exactly: a key or value that is not clean text (not UTF-8, or holding a NUL, which
        jsonb refuses) is stored base64-encoded as key_b64 / value_b64. A name the Kafka
        client could not read (see _read_headers) is marked key_unreadable."""
        out: list[dict[str, Any]] = []
        for key, value in self.headers:
            item: dict[str, Any] = {}
            if key is None:
                item["key_unreadable"] = True
            elif _clean_text(key):
                item["key"] = key
            else:
                item["key_b64"] = base64.b64encode(_key_bytes(key)).decode("ascii")
            if value is None:
                item["value"] = None
            else:
                text = _clean_utf8(bytes(value))
                if text is not None:
                    item["value"] = text
                else:
                    item["value_b64"] = base64.b64encode(bytes(value)).decode("ascii")
            out.append(item)
        if self.headers_error:
            out.append({"unreadable": self.headers_error})
        return out


def headers_from_json(items: list[dict[str, Any]]) -> list[tuple[str | None, bytes | None]]:
    """The headers headers_json stored, byte for byte (an unreadable-headers note is skipped)."""
    headers: list[tuple[str | None, bytes | None]] = []
    for item in items:
        key: str | None
        if item.get("key_unreadable"):
            key = None
        elif item.get("key_b64") is not None:
            key = base64.b64decode(item["key_b64"]).decode("utf-8", "surrogateescape")
        elif "key" in item:
            key = item["key"] or ""
        else:
            continue
        if item.get("value_b64") is not None:
            headers.append((key, base64.b64decode(item["value_b64"])))
        elif item.get("value") is None:
            headers.append((key, None))
        else:
            headers.append((key, item["value"].encode("utf-8")))
    return headers


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def datetime_from_millis(millis: int | None) -> datetime | None:
    """The datetime of a Kafka timestamp, or None when it has none: not given, zero or
    negative (Kafka's "no timestamp" is -1), or outside what a datetime can hold."""
    if millis is None or millis <= 0:
        return None
    try:
        return _EPOCH + timedelta(milliseconds=millis)
    except OverflowError:
        return None


def _timestamp_millis(message: Any) -> int | None:
    try:
        kind, millis = message.timestamp()
    except Exception:  # librdkafka gave something the binding cannot convert
        return None
    if kind == TIMESTAMP_NOT_AVAILABLE or not isinstance(millis, int):
        return None
    return millis


def _read_headers(message: Any) -> tuple[list[tuple[str | None, bytes | None]], str]:
    """The record's headers, also when a header's name is not UTF-8 (other clients send such).

    confluent-kafka decodes each name as UTF-8; for one that is not, it leaves that (name,
    value) tuple without a name and its UnicodeDecodeError pending, which surfaces as
    SystemError (or itself) from headers() or from whichever C call comes next; a second
    headers() returns the list it cached. Touching the missing name would crash the
    interpreter, so each tuple's parts are counted through gc.get_referents, which skips a
    missing item. The name's bytes are in the UnicodeDecodeError: when one name is missing,
    it is restored from them (as a str decoded with surrogateescape, stored base64 by
    headers_json); when several are, they are None."""
    undecodable: list[bytes] = []

    def call(function: Any, *args: Any) -> Any:
        try:
            return function(*args)
        except (SystemError, UnicodeDecodeError) as exc:
            cause = exc if isinstance(exc, UnicodeDecodeError) else exc.__cause__
            if isinstance(cause, UnicodeDecodeError) and isinstance(cause.object, bytes):
                undecodable.append(cause.object)
            return function(*args)

    try:
        raw = call(message.headers) or []
        headers: list[tuple[str | None, bytes | None]] = []
        for item in raw:
            parts = call(gc.get_referents, item)
            if len(parts) == 2:
                key, value = item
                headers.append((key, value))
            else:  # the name is missing; the value is all there is
                value = parts[0] if parts else None
                headers.append((None, value if isinstance(value, bytes) else None))
        call(len, raw)  # surfaces (and clears) an error still pending
        missing = [i for i, (key, _) in enumerate(headers) if key is None]
        if len(missing) == 1 and len(undecodable) == 1:
            headers[missing[0]] = (undecodable[0].decode("utf-8", "surrogateescape"), headers[missing[0]][1])
        return headers, ""
    except Exception as exc:
        return [], f"headers not readable by the Kafka client ({type(exc).__name__})"


def _key_bytes(key: str) -> bytes:
    """A header name's bytes as Kafka had them (a name that was not UTF-8 was decoded with
    surrogateescape)."""
    try:
        return key.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate no Kafka name decodes to
        return key.encode("utf-8", "surrogatepass")


def _clean_text(text: str) -> bool:
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _clean_utf8(value: bytes) -> str | None:
    if b"\x00" in value:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None
