"""Trace ids for messages. Full tracing arrives with sentry-sdk; until then the
id is continued from the record's headers or started here, so every row and
log line of one message already shares it."""
from __future__ import annotations

import re
import uuid

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_SENTRY_TRACE = re.compile(r"^([0-9a-f]{32})-[0-9a-f]{16}(-[01])?$")


def trace_id_from_headers(traceparent: str | None, sentry_trace: str | None) -> str:
    for value, pattern in ((sentry_trace, _SENTRY_TRACE), (traceparent, _TRACEPARENT)):
        if value:
            match = pattern.match(value.strip().lower())
            if match and match.group(1) != "0" * 32:
                return match.group(1)
    return uuid.uuid4().hex
