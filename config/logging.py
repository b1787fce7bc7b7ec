"""Log lines: JSON for machines (the default), text for people (LOG_FORMAT=text).

Every line says which service wrote it and, when it is about a message, which
one: the trace and span ids of the current Sentry span, and the processing_id,
lead_id and intent the pipeline binds with `bound(...)`. So one message's lines
can be found across ingest and every worker by processing_id or trace id.

Only the fields listed in FIELDS are written, whatever a library passes in
`extra=`: a log line cannot leak a payload by accident. Customer text, phone
numbers and tokens are never logged at INFO or above (tests/integration/test_metrics.py
scans the logs of a mixed stream for them).

Every line also goes through RedactFilter, at every level: each URL in its message or
its traceback is cut down to scheme://host:port and the access token is replaced
(config.redaction), since outbound URLs may carry credentials and tokens in their
userinfo, path and query. urllib3, which logs whole request lines at DEBUG, is kept
at WARNING.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

from config.redaction import configured_secrets, redact

# What a message's log lines carry; bound by the pipeline, read by ContextFilter.
CONTEXT_FIELDS = ("processing_id", "lead_id", "intent", "saga_run")
FIELDS = (
    "timestamp",
    "level",
    "service",
    "logger",
    "message",
    "trace_id",
    "span_id",
    *CONTEXT_FIELDS,
    "duration_ms",
    "exc_info",
)

# The default is read-only: a shared mutable default would leak fields between contexts.
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "log_context", default=MappingProxyType({})
)


def bind(**fields: Any) -> contextvars.Token[Mapping[str, Any]]:
    """Add fields to every log line of this thread/task until `unbind(token)`."""
    return _context.set({**_context.get(), **{k: v for k, v in fields.items() if v not in (None, "")}})


def unbind(token: contextvars.Token[Mapping[str, Any]]) -> None:
    _context.reset(token)


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


def context() -> dict[str, Any]:
    return dict(_context.get())


def service_name(argv: Sequence[str] | None = None) -> str:
    """Which process this is, from its command line: web, worker, beat, ingest, flower or the command's name."""
    argv = list(sys.argv if argv is None else argv)
    words = [os.path.basename(a) for a in argv if not a.startswith("-")]
    # `celery ...` has argv[0] .../bin/celery; `python -m celery ...` has .../celery/__main__.py.
    if argv and os.path.basename(argv[0]) != "manage.py" and "celery" in argv[0]:
        for kind in ("worker", "beat", "flower"):
            if kind in words:
                return kind
        return "celery"
    if "ingest_kafka" in words:
        return "ingest"
    if any(w in ("runserver", "gunicorn", "uwsgi", "wsgi.py") for w in words):
        return "web"
    if len(words) > 1 and words[0] == "manage.py":
        return words[1]
    return "web"


def _current_trace() -> tuple[str | None, str | None]:
    """The trace and span id of the Sentry span this code runs in, if any."""
    try:
        import sentry_sdk

        span = sentry_sdk.get_current_span()
    except Exception:  # logging must never fail because tracing did
        return None, None
    if span is None:
        return None, None
    return getattr(span, "trace_id", None) or None, getattr(span, "span_id", None) or None


class ContextFilter(logging.Filter):
    """Puts service, trace, span and message fields on every record (for either format)."""

    def __init__(self, service: str | None = None) -> None:
        super().__init__()
        self.service = service or service_name()

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        bound_fields = _context.get()
        for key in CONTEXT_FIELDS:
            if getattr(record, key, None) is None:
                setattr(record, key, bound_fields.get(key))
        if getattr(record, "trace_id", None) is None:
            # A task's trace, bound as it started (without a Sentry DSN), else the current span's.
            traced = bound_fields.get("trace_id")
            record.trace_id, record.span_id = (traced, bound_fields.get("span_id")) if traced else _current_trace()
        if getattr(record, "duration_ms", None) is None:
            # Celery's "Task ... succeeded in Ns" passes its runtime in extra={"data": ...}.
            data = getattr(record, "data", None)
            runtime = data.get("runtime") if isinstance(data, dict) else None
            record.duration_ms = round(runtime * 1000, 3) if isinstance(runtime, (int, float)) else None
        return True


class RedactFilter(logging.Filter):
    """Takes URLs' secrets and known secret values out of a record's message and traceback.

    Cheap for the usual line: the message is only rewritten when it holds "://", "url"
    or a known secret, and a traceback only when there is one."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = configured_secrets()
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the formatter to report
            return True
        if "://" in message or "url" in message or any(s in message for s in secrets):
            redacted = redact(message, secrets)
            if redacted != message:
                record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[0] is not None:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text, secrets)
            record.exc_info = None  # the formatters print exc_text instead
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)
        return True


class JsonFormatter(_JsonFormatter):
    """One JSON object per line, with the FIELDS that have a value and nothing else."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        kwargs.setdefault("timestamp", True)
        kwargs.setdefault("json_ensure_ascii", False)
        super().__init__("%(levelname)s %(name)s %(message)s", *args, **kwargs)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        stamp = log_data.get("timestamp")
        if stamp is not None and hasattr(stamp, "isoformat"):
            log_data["timestamp"] = stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {key: log_data[key] for key in FIELDS if log_data.get(key) not in (None, "")}


class TextFormatter(logging.Formatter):
    """For reading locally: time, level, service, logger, [trace processing_id], message."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tags = " ".join(
            str(v) for v in (getattr(record, "trace_id", None), getattr(record, "processing_id", None)) if v
        )
        head = f"{self.formatTime(record)} {record.levelname} {getattr(record, 'service', '-')} {record.name}"
        duration = getattr(record, "duration_ms", None)
        tail = f" ({duration:.0f} ms)" if isinstance(duration, (int, float)) and "data" not in record.__dict__ else ""
        return f"{head} [{tags}] {line}{tail}" if tags else f"{head} {line}{tail}"


def logging_config(*, level: str, log_format: str, service: str) -> dict[str, Any]:
    """The LOGGING dict for Django's settings."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "context": {"()": "config.logging.ContextFilter", "service": service},
            "redact": {"()": "config.logging.RedactFilter"},
        },
        "formatters": {
            "json": {"()": "config.logging.JsonFormatter"},
            "text": {"()": "config.logging.TextFormatter", "format": "%(message)s"},
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": log_format, "filters": ["context", "redact"]},
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "kafka": {"level": "WARNING"},
            # Its DEBUG lines quote whole request lines, path and query included.
            "urllib3": {"level": "WARNING"},
            # runserver's request lines: ours too, instead of Django's own plain format.
            "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
        },
    }
