"""Dead letters as CSV or JSON lines, for a spreadsheet, a ticket or a script.

What an export holds follows what its reader may do: the record itself (the
validated payload, the raw Kafka value, key and headers) goes only to those who
may requeue it, as on the command line; everyone else gets what the list and
the entry's page say about the failure. Every text passes through
config.redaction on the way out (URLs cut to their origin, the configured
secrets replaced), so a secret that slipped into an error or a record does not
leave in a file.

The JSON columns are read as the text Postgres holds and parsed only when
dlq.display finds them small and shallow enough, as on the entry's page: a
record nested 100,000 levels deep is exported as its text, not a crash.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast

from config.redaction import configured_secrets, redact
from dlq import display

# What every reader gets, in this order (the CSV's columns).
FIELDS = [
    "id",
    "created_at",
    "status",
    "stage",
    "reason",
    "business_id",
    "processing_id",
    "lead_id",
    "error_class",
    "error_message",
    "attempts",
    "requeue_count",
    "saga_run",
    "trace_id",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "kafka_timestamp",
    "closed_by",
    "closed_at",
    "resolution_note",
    "traceback",
]
# The record itself: only for readers who may requeue it.
RECORD_FIELDS = ["payload", "raw_value", "raw_value_encoding", "kafka_key", "kafka_key_encoding", "kafka_headers"]
# Rows fetched from Postgres at a time: the export streams, whatever the selection's size.
CHUNK = 500
# A spreadsheet runs a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def fields(*, with_record: bool) -> list[str]:
    return FIELDS + RECORD_FIELDS if with_record else list(FIELDS)


def rows(queryset: QuerySet, *, with_record: bool) -> Iterator[dict[str, Any]]:
    """One dict per entry, oldest first, every text redacted."""
    secrets = configured_secrets()
    columns = [name for name in FIELDS if name != "id"]
    texts: dict[str, Any] = {}
    if with_record:
        columns += ["raw_value", "kafka_key"]
        texts = {
            "payload_text": Cast("payload", output_field=TextField()),
            "headers_text": Cast("kafka_headers", output_field=TextField()),
        }
    values = queryset.order_by("created_at", "pk").values("pk", *columns, **texts)
    for entry in values.iterator(chunk_size=CHUNK):
        row: dict[str, Any] = {"id": entry["pk"]}
        for name in FIELDS[1:]:
            row[name] = _clean(entry[name], secrets)
        if with_record:
            row["payload"] = _json(entry["payload_text"], secrets)
            row["raw_value_encoding"], row["raw_value"] = _bytes(entry["raw_value"], secrets)
            row["kafka_key_encoding"], row["kafka_key"] = _bytes(entry["kafka_key"], secrets)
            row["kafka_headers"] = _json(entry["headers_text"], secrets)
        yield row


def _clean(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        return redact(value, secrets)
    return value


def _json(text: str | None, secrets: tuple[str, ...]) -> Any:
    """The JSON value, parsed when dlq.display would lay it out, else its (redacted) text."""
    if text is None:
        return None
    text = redact(text, secrets)
    value = display.load_json(text)
    return text if isinstance(value, display.Unreadable) else value


def _bytes(raw: bytes | memoryview | None, secrets: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(encoding, data): UTF-8 text as itself (redacted), anything else as base64."""
    if raw is None:
        return None, None
    data = bytes(raw)
    try:
        return "utf-8", redact(data.decode("utf-8"), secrets)
    except UnicodeDecodeError:
        return "base64", base64.b64encode(data).decode("ascii")


def jsonl(entries: Iterable[dict[str, Any]]) -> Iterator[str]:
    """One JSON object a line (JSON Lines)."""
    for row in entries:
        yield json.dumps(row, ensure_ascii=False) + "\n"


def csv_lines(entries: Iterable[dict[str, Any]], columns: list[str]) -> Iterator[str]:
    """A header line, then one line per entry. JSON values are written as JSON text,
    and a text cell that a spreadsheet would run as a formula starts with a quote
    (OWASP's advice against CSV injection: a hostile record's error must not run)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(cells: list[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(cells)
        return buffer.getvalue()

    yield line(columns)
    for row in entries:
        cells = []
        for name in columns:
            value = row[name]
            if isinstance(value, (dict, list)):
                value = json.dumps(value, ensure_ascii=False)
            if isinstance(value, str) and value.startswith(FORMULA_STARTS):
                value = "'" + value
            cells.append("" if value is None else value)
        yield line(cells)
