"""How the admin shows what a dead letter holds, whatever it holds.

A dead letter keeps a record that failed, so it holds whatever arrived: JSON
nested 100,000 levels deep, megabytes of text, bytes that are not text. Every
rendering here is bounded in size and in depth, and escaped, so that an entry's
page always opens and opens quickly. json.loads recurses once per level (a
RecursionError near 1,000 levels) and a page of megabytes helps nobody, so JSON
is only parsed when a scan, which does not recurse, finds it shallow and small
enough; otherwise it is shown as the text it is, cut short.

The admin reads the entry's JSON columns as text (cast in SQL) and renders them
here: Django's JSONField would json.loads them as the row is loaded, before any
of this could help. Nothing in the standard library or Django renders untrusted
JSON with such bounds, hence this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from django.utils.html import format_html
from django.utils.safestring import SafeString

from core.admin_display import PRE_STYLE

# Characters of any one value shown on the page.
PREVIEW_CHARS = 65_536
# JSON text longer than this is shown as text, never parsed or laid out.
PARSE_CHARS = 2_000_000
# JSON nested deeper than this is shown as text (each level costs a stack frame to parse and lay out).
MAX_DEPTH = 64
# A string inside JSON longer than this is cut, so one long value does not fill the preview.
STRING_CHARS = 4_096
# Bytes shown, as hex, of a value that is not UTF-8 text.
BINARY_BYTES = 4_096

NOTE_STYLE = "margin: 0 0 .3em; color: var(--body-quiet-color, #666); font-style: italic"

# A JSON string, escapes included; possessive, so it never backtracks.
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.S)
_BRACKETS = re.compile(r"[\[\]{}]")
# C0 controls (but tab, newline, carriage return) and DEL: shown as \xNN rather than sent raw to a browser.
_CONTROLS = {code: f"\\x{code:02x}" for code in [*range(9), 11, 12, *range(14, 32), 127]}


class Unreadable:
    """What load_json gives for text it will not parse; `why` says why, for the page."""

    def __init__(self, why: str) -> None:
        self.why = why


def nesting_exceeds(text: str, limit: int) -> bool:
    """Whether the brackets of JSON text (outside strings) nest deeper than `limit`.
    Stops at the first bracket past the limit, so a deep document costs little."""
    depth = 0
    for match in _BRACKETS.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def load_json(text: str) -> Any:
    """Parse JSON text that is small and shallow enough to lay out; else an Unreadable."""
    if len(text) > PARSE_CHARS:
        return Unreadable(f"{len(text):,} characters, too long to lay out")
    if nesting_exceeds(text, MAX_DEPTH):
        return Unreadable(f"nested more than {MAX_DEPTH} levels deep")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        return Unreadable(f"not JSON ({str(exc)[:200]})")


class _Full(Exception):
    """The preview has reached PREVIEW_CHARS."""


def pretty(value: Any) -> tuple[str, bool]:
    """Indented JSON of a parsed value (keys sorted), long strings cut, at most
    PREVIEW_CHARS characters; and whether it was cut short there."""
    out: list[str] = []
    size = 0

    def write(piece: str) -> None:
        nonlocal size
        out.append(piece)
        size += len(piece)
        if size > PREVIEW_CHARS:
            raise _Full

    def scalar(item: Any) -> str:
        if isinstance(item, str) and len(item) > STRING_CHARS:
            return json.dumps(item[:STRING_CHARS], ensure_ascii=False) + f"… ({len(item):,} characters)"
        return json.dumps(item, ensure_ascii=False)

    def emit(item: Any, indent: str) -> None:
        if isinstance(item, dict) and item:
            write("{\n")
            keys = sorted(item, key=str)
            for index, key in enumerate(keys):
                write(f"{indent}  {scalar(str(key))}: ")
                emit(item[key], indent + "  ")
                write(",\n" if index < len(keys) - 1 else "\n")
            write(indent + "}")
        elif isinstance(item, list) and item:
            write("[\n")
            for index, element in enumerate(item):
                write(indent + "  ")
                emit(element, indent + "  ")
                write(",\n" if index < len(item) - 1 else "\n")
            write(indent + "]")
        else:
            write(scalar(item))

    try:
        emit(value, "")
    except _Full:
        return "".join(out)[:PREVIEW_CHARS], True
    return "".join(out), False


def visible(text: str) -> str:
    """Control characters written as \\xNN, so what reaches the page is printable."""
    return text.translate(_CONTROLS)


def block(text: str, note: str = "") -> SafeString:
    """A <pre> of the text (escaped), after a note saying how it was cut or why it is not laid out."""
    if note:
        return format_html('<p style="{}">{}</p><pre style="{}">{}</pre>', NOTE_STYLE, note, PRE_STYLE, text)
    return format_html('<pre style="{}">{}</pre>', PRE_STYLE, text)


def text_block(text: str, note: str = "", *, tail: bool = False) -> SafeString:
    """Text as it was (control characters made visible), its first PREVIEW_CHARS
    characters, or its last with tail=True (the end of a traceback says the most)."""
    if len(text) > PREVIEW_CHARS:
        kept = text[-PREVIEW_CHARS:] if tail else text[:PREVIEW_CHARS]
        cut = f"the {'last' if tail else 'first'} {PREVIEW_CHARS:,} of {len(text):,} characters"
        note = f"{note}; {cut}" if note else cut[0].upper() + cut[1:]
        text = kept
    return block(visible(text), note)


def json_block(text: str | None, *, label: str = "") -> SafeString | str:
    """JSON text laid out for reading when it can be, else shown as text, cut short."""
    if text is None:
        return "-"
    value = load_json(text)
    if isinstance(value, Unreadable):
        return text_block(text, f"{label}{value.why}: shown as stored")
    if value in (None, "", [], {}):
        return "-"
    laid_out, cut = pretty(value)
    note = f"{label}the first {PREVIEW_CHARS:,} characters laid out" if cut else label.rstrip("; ")
    return block(laid_out, note)


def hex_dump(data: bytes) -> str:
    """Offset, 16 bytes in hex, and those bytes as ASCII (dots for the rest), as `xxd` shows them."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        ascii_ = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}  {chunk.hex(' '):<47}  {ascii_}")
    return "\n".join(lines)


def bytes_block(raw: bytes | memoryview | None) -> SafeString | str:
    """A raw Kafka value: JSON laid out, other UTF-8 text as text, anything else as hex."""
    if raw is None:
        return "-"
    raw = bytes(raw)
    if not raw:
        return "(empty: 0 bytes)"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        shown = raw[:BINARY_BYTES]
        note = (
            f"Not UTF-8 text ({exc.reason} at byte {exc.start}): {len(raw):,} bytes, "
            f"{'the first ' + format(len(shown), ',') if len(shown) < len(raw) else 'all'} shown as hex"
        )
        return block(hex_dump(shown), note)
    return json_block(text, label=f"{len(raw):,} bytes; ")


def table_cell(value: Any, limit: int = 500) -> str:
    """One value of a small table, as short text."""
    if isinstance(value, str) or value is None:
        text = value or ""
    else:
        text = json.dumps(value, ensure_ascii=False, default=str)
    return visible(text[:limit] + ("…" if len(text) > limit else ""))


def rows_of(value: Any, limit: int = 200) -> list[dict] | None:
    """The list of objects a small table shows, or None when the value is not one
    (or is too long for a table): the caller then shows it as JSON instead."""
    if isinstance(value, list) and len(value) <= limit and all(isinstance(row, dict) for row in value):
        return value
    return None


def table_or_block(text: str | None, render: Callable[[Any], SafeString | str | None]) -> SafeString | str:
    """render(parsed JSON) when it parses and has the shape render lays out (render
    returns None otherwise); else the JSON, or the text, as it is."""
    if text is None:
        return "-"
    value = load_json(text)
    if not isinstance(value, Unreadable):
        rendered = render(value)
        if rendered is not None:
            return rendered
    return json_block(text)
