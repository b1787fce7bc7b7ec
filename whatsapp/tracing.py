"""Tracing: one trace per message, from the Kafka record to the reply, with sentry-sdk.

- Ingest continues the trace the record's headers carry (`sentry-trace` and
  `baggage`, or W3C `traceparent`), or starts one, in a transaction per record
  with spans for validation, tenant resolution and the inbox insert (dedupe).
  Its trace id is stored on the inbox row or the dead letter.
- The Celery integration puts the trace in every task message it sends, so
  every task of the message's chain (including those added by `Task.replace`,
  retries and compensation) is a transaction of the same trace. Each task gets
  the processing_id, intent and action as tags; spans mark the dedupe claim,
  tenant resolution, the handler, each action, the reply, and each outbound
  HTTP call (sentry-sdk's stdlib integration).
- The sweeper, requeue and a re-read record continue the trace from the id
  stored on the inbox row.

With no SENTRY_DSN nothing is sent anywhere and nothing is sampled, but
transactions and spans still exist (unsampled), so trace and span ids still
propagate between processes and into every log line (config/logging.py). No
customer text or phone number is put on a span or tag, local variables are
not attached to errors, and our trace headers are not sent to Meta or the
sales CRMs (trace_propagation_targets is empty).
"""
from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import sentry_sdk

from config.logging import bound

if TYPE_CHECKING:
    from whatsapp.kafka import Record

log = logging.getLogger(__name__)

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_SENTRY_TRACE = re.compile(r"^([0-9a-f]{32})-([0-9a-f]{16})(-[01])?$")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
# The tags a span or transaction may carry: ids and names, never customer data.
TAGS = ("processing_id", "intent", "action")


def init_sentry(*, dsn: str | None, traces_sample_rate: float, environment: str | None,
                release: str | None, service: str) -> None:
    """Set up sentry-sdk for this process (called from settings, so web, workers and ingest alike)."""
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration
    from sentry_sdk.integrations.redis import RedisIntegration
    from sentry_sdk.integrations.stdlib import StdlibIntegration

    sentry_sdk.init(
        dsn=dsn or None,
        # Without a DSN nothing would be sent: sample nothing, so no transaction is recorded
        # and serialized for nothing. Unsampled transactions and spans still have their ids,
        # which propagate to every task and log line all the same.
        traces_sample_rate=traces_sample_rate if dsn else 0.0,
        traces_sampler=sampler(traces_sample_rate) if dsn else None,
        environment=environment,
        release=release,
        integrations=[
            CeleryIntegration(propagate_traces=True),
            *([DjangoIntegration(), LoggingIntegration(level=logging.INFO, event_level=logging.ERROR)] if dsn else []),
        ],
        # Without a DSN, Django's integration would only time every SQL query and request,
        # and the logging one keep a breadcrumb of every log line, for nothing: nothing is
        # sent. The Celery integration stays, so trace ids still travel with every task into
        # its log lines.
        auto_enabling_integrations=bool(dsn),
        default_integrations=bool(dsn),
        # Its span for a Redis command that raises is entered and never exited (sentry-sdk
        # 2.75), leaving a stale current span, and its trace id on later log lines, after any
        # Redis outage. Redis calls here are the broker's and the breakers', not worth a span.
        # Its span and breadcrumb for an http.client request carry the request's path and
        # query, where a sales webhook URL may hold a token: whatsapp/clients/http.py makes
        # the outbound call's span itself, named by the destination's origin only.
        disabled_integrations=[RedisIntegration(), StdlibIntegration()],
        # No PII by default (user, cookies, SQL parameters); and no local variables,
        # which hold message payloads.
        include_local_variables=False,
        max_request_body_size="never",
        trace_propagation_targets=[],  # no trace headers to Meta or the businesses' CRMs
    )
    sentry_sdk.get_global_scope().set_tag("service", service)


# Probes and scrapes: a transaction each would drown the messages' traces.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def sampler(rate: float):
    """Sample at `rate`, follow the upstream decision when the trace came with one (so a
    message's trace is whole or absent), and never sample health checks or scrapes."""
    def decide(context: dict[str, Any]) -> float:
        environ = context.get("wsgi_environ") or {}
        if environ.get("PATH_INFO") in QUIET_PATHS:
            return 0.0
        parent = context.get("parent_sampled")
        return float(parent) if parent is not None else rate

    return decide


# --- ingest ----------------------------------------------------------------------------------
def incoming_headers(record: Record) -> dict[str, str]:
    """The record's trace context in the form sentry-sdk continues: its sentry-trace (and
    baggage) if valid, else its W3C traceparent translated (trace and parent span id; our own
    sample rate decides), else nothing (a new trace). Whatever the headers hold (NUL, bytes
    that are not UTF-8, megabytes) this only reads them: anything malformed is ignored."""
    sentry_trace = _short_header(record, "sentry-trace").strip().lower()
    match = _SENTRY_TRACE.match(sentry_trace)
    if match and match.group(1) != "0" * 32:
        headers = {"sentry-trace": sentry_trace}
        baggage = _short_header(record, "baggage", limit=MAX_BAGGAGE_CHARS)
        if baggage and baggage.isascii() and baggage.isprintable():
            headers["baggage"] = baggage
        return headers
    match = _TRACEPARENT.match(_short_header(record, "traceparent").strip().lower())
    if match and match.group(1) != "0" * 32 and match.group(2) != "0" * 16:
        return {"sentry-trace": f"{match.group(1)}-{match.group(2)}"}
    return {}


# W3C's limit for a baggage header; a longer one is dropped, not parsed.
MAX_BAGGAGE_CHARS = 8192
# A trace id header is under 60 characters; anything much longer is not one.
_MAX_TRACE_HEADER_CHARS = 128


def _short_header(record: Record, name: str, limit: int = _MAX_TRACE_HEADER_CHARS) -> str:
    """The header's text, or "" when it is missing or longer than `limit` (so a huge
    garbage header is never decoded or matched)."""
    for key, value in record.headers:
        if key is not None and key.lower() == name and value is not None:
            raw = bytes(value)
            return raw.decode("utf-8", errors="replace") if len(raw) <= limit else ""
    return ""


class RecordTrace:
    """One Kafka record's transaction in ingest. Batch work (the inbox insert) gets a span in
    every record's transaction, each as long as the batch operation; the transaction ends once
    the record's pipeline is enqueued (or it was stored as a duplicate or dead letter)."""

    def __init__(self, record: Record) -> None:
        headers = incoming_headers(record)
        try:
            self.transaction = self._start(record, headers)
        except Exception:
            # sentry-sdk refused the upstream context (it raises on some baggage values, e.g.
            # sentry-sample_rate=inf): continue the trace without the baggage, else start anew.
            log.debug("ingest: unusable trace headers on %s[%s]@%s", record.topic, record.partition, record.offset)
            try:
                self.transaction = self._start(record, {k: v for k, v in headers.items() if k != "baggage"})
            except Exception:
                self.transaction = self._start(record, {})
        self.tags: dict[str, str] = {}
        self.log_fields: dict[str, str] = {}
        self._finished = False

    @staticmethod
    def _start(record: Record, headers: dict[str, str]) -> Any:
        # continue_trace sets the scope's propagation context: keep that to a throwaway scope.
        with sentry_sdk.isolation_scope():
            transaction = sentry_sdk.continue_trace(headers, op="queue.process", name="whatsapp.ingest", source="task")
        transaction.set_data("messaging.destination.name", record.topic)
        transaction.set_data("messaging.message.id", f"{record.topic}[{record.partition}]@{record.offset}")
        return sentry_sdk.start_transaction(transaction)

    @property
    def trace_id(self) -> str:
        return self.transaction.trace_id

    def about(self, **fields: str | None) -> None:
        """Which message this is: tags (TAGS) for Sentry, and every field for its log lines."""
        for key, value in fields.items():
            if value:
                self.log_fields[key] = value
                if key in TAGS:
                    self.tags[key] = value
                    self.transaction.set_tag(key, value)

    def child(self, op: str, name: str) -> Any:
        """A span under this record's transaction; use as a context manager, or finish() it."""
        span = self.transaction.start_child(op=op, name=name)
        for key, value in self.tags.items():
            span.set_tag(key, value)
        return span

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Make this record's transaction the current span (for log lines and for the trace
        headers Celery puts on the tasks it sends), with its ids bound for logging."""
        with sentry_sdk.new_scope() as scope:
            scope.span = self.transaction
            for key, value in self.tags.items():
                scope.set_tag(key, value)
            with bound(**self.log_fields):
                yield

    def finish(self, status: str = "ok") -> None:
        if not self._finished:
            self._finished = True
            self.transaction.set_status(status)
            self.transaction.finish()


@contextlib.contextmanager
def message_trace(trace_id: str | None, *, name: str, processing_id: str) -> Iterator[None]:
    """Continue a message's trace from the id stored on its inbox row (the sweeper, requeue,
    a record read again), so the tasks sent inside join that trace. The parent span is not
    known any more, so a new one stands in for it."""
    headers = {"sentry-trace": f"{trace_id}-{uuid.uuid4().hex[16:]}"} if trace_id and _TRACE_ID.match(trace_id) else {}
    with sentry_sdk.isolation_scope() as scope:
        scope.set_tag("processing_id", processing_id)
        transaction = sentry_sdk.continue_trace(headers, op="queue.submit", name=name, source="task")
        with sentry_sdk.start_transaction(transaction), bound(processing_id=processing_id):
            yield


# --- tasks -------------------------------------------------------------------------------------
def tag_task(**tags: str | int | None) -> None:
    """Tags for the running task's transaction (and any error it reports)."""
    scope = sentry_sdk.get_isolation_scope()
    for key, value in tags.items():
        if value not in (None, "") and key in TAGS:
            scope.set_tag(key, str(value))


@contextlib.contextmanager
def span(op: str, name: str, **tags: str | None) -> Iterator[Any]:
    """A span for one stage of a task, tagged with the message's ids (from the log context)
    and the given tags; outbound HTTP calls inside it become its children."""
    from config.logging import context

    known = {**{k: v for k, v in context().items() if k in TAGS}, **{k: v for k, v in tags.items() if v}}
    with sentry_sdk.start_span(op=op, name=name) as current:
        for key, value in known.items():
            current.set_tag(key, str(value))
        yield current


def note_message(message: Any) -> None:
    """Inside that message's task, add its lead and intent to the log lines and its intent
    to the Sentry tags. Elsewhere (a test calling the saga directly) it does nothing."""
    from config.logging import bind, context

    if context().get("processing_id") != message.processing_id:
        return
    bind(lead_id=message.lead_id, intent=message.intent)
    tag_task(intent=message.intent)
