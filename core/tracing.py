"""Tracing: one trace per message, from the Kafka record to the reply, with sentry-sdk.

- Ingest continues the trace the record's headers carry (`sentry-trace` and
  `baggage`, or W3C `traceparent`), or starts one (RecordTrace), with spans for
  validation, tenant resolution and the inbox insert (dedupe). Its trace id is
  stored on the inbox row or the dead letter, and written into the message of
  the chain's first task (MessageTrace.sending), as sentry-sdk's Celery
  integration would write it.
- The Celery integration puts the trace in every task message a worker sends,
  so every task of the message's chain (including the action tasks intent
  sends, retries and compensation) is a transaction of the same trace.
  Each task gets the processing_id, intent and action as tags; spans mark the
  dedupe claim, tenant resolution, the handler, each action, the reply, and
  each outbound HTTP call (sentry-sdk's stdlib integration).
- The sweeper, requeue and a re-read record continue the trace from the id
  stored on the inbox row.

With no SENTRY_DSN nothing is sent anywhere and nothing is sampled, but the
ids still propagate between processes and into every log line
(config/logging.py): ingest then keeps a message's trace as its ids alone
(MessageTrace), and the workers' tasks run in unsampled transactions. No
customer text or phone number is put on a span or tag, local variables are
not attached to errors, and our trace headers are not sent to Meta or the
sales CRMs (trace_propagation_targets is empty). Every event and transaction leaves
without the request's query string, body, cookies and credential headers
(core.sentry, which sets the SDK up for each process).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import sentry_sdk

from config.logging import bind, bound, context


class Record(Protocol):
    """What tracing reads of a received Kafka record (whatsapp.kafka.Record, a frozen
    dataclass: hence read-only members). A header may have no name."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def headers(self) -> Sequence[tuple[str | None, bytes | None]]: ...


log = logging.getLogger(__name__)

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_SENTRY_TRACE = re.compile(r"^([0-9a-f]{32})-([0-9a-f]{16})(-[01])?$")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
# The tags a span or transaction may carry: ids and names, never customer data.
TAGS = ("processing_id", "intent", "action")


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


def recording() -> bool:
    """Whether this process sends traces anywhere (a SENTRY_DSN is set)."""
    return bool(sentry_sdk.get_client().dsn)


class _NoSpan:
    """Stands in for a span when nothing is recorded: accepts what a span accepts, keeps nothing."""

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set_data(self, key: str, value: Any) -> None:
        pass

    def set_tag(self, key: str, value: Any) -> None:
        pass

    def finish(self) -> None:
        pass


_NO_SPAN = _NoSpan()


class MessageTrace:
    """One message's trace in this process, from the trace context it arrived with (or a new
    one) to the moment its first task is handed to Celery.

    With a SENTRY_DSN it is a Sentry transaction, with spans for the work done on the message
    and one for handing on its first task, which that task's own transaction hangs from.
    Without one, nothing would be sent and nothing is sampled, so none is built: the trace is
    its ids (the upstream trace continued, or a new one, and a span id of its own), which go on
    the message's log lines and into its first task's message all the same. Building an
    unsampled transaction, its spans and a scope for each log line cost ingest more per record
    than storing the record (sentry-sdk 2.75, measured)."""

    def __init__(self, headers: dict[str, str], *, op: str, name: str, data: dict[str, str] | None = None) -> None:
        self.tags: dict[str, str] = {}
        self.log_fields: dict[str, str] = {}
        self._finished = False
        self.transaction: Any = self._transaction(headers, op, name, data or {}) if recording() else None
        if self.transaction is not None:
            self.trace_id: str = self.transaction.trace_id
            self.span_id: str = self.transaction.span_id
            self.parent_span_id: str | None = self.transaction.parent_span_id
            return
        continued = _SENTRY_TRACE.match(headers.get("sentry-trace", ""))
        self.trace_id = continued.group(1) if continued else uuid.uuid4().hex
        self.parent_span_id = continued.group(2) if continued else None
        self.span_id = uuid.uuid4().hex[16:]
        self._sampled = (continued.group(3) or "") if continued else ""  # the upstream's decision, "-1" or "-0"

    @classmethod
    def stored(cls, trace_id: str | None, *, name: str, processing_id: str) -> MessageTrace:
        """Continue a message's trace from the id stored on its inbox row (requeue, the sweeper,
        a record read again). The parent span is not known any more, so a new one stands in."""
        valid = bool(trace_id and _TRACE_ID.match(trace_id))
        headers = {"sentry-trace": f"{trace_id}-{uuid.uuid4().hex[16:]}"} if valid else {}
        trace = cls(headers, op="queue.submit", name=name)
        trace.about(processing_id=processing_id)
        return trace

    @staticmethod
    def _transaction(headers: dict[str, str], op: str, name: str, data: dict[str, str]) -> Any:
        try:
            return MessageTrace._start(headers, op, name, data)
        except Exception:
            # sentry-sdk refused the upstream context (it raises on some baggage values, e.g.
            # sentry-sample_rate=inf): continue the trace without the baggage, else start anew.
            log.debug("unusable trace headers for %s", name)
            try:
                return MessageTrace._start({k: v for k, v in headers.items() if k != "baggage"}, op, name, data)
            except Exception:
                return MessageTrace._start({}, op, name, data)

    @staticmethod
    def _start(headers: dict[str, str], op: str, name: str, data: dict[str, str]) -> Any:
        # continue_trace sets the scope's propagation context: keep that to a throwaway scope.
        with sentry_sdk.isolation_scope():
            transaction = sentry_sdk.continue_trace(headers, op=op, name=name, source="task")
        for key, value in data.items():
            transaction.set_data(key, value)
        return sentry_sdk.start_transaction(transaction)

    def about(self, **fields: str | None) -> None:
        """Which message this is: tags (TAGS) for Sentry, and every field for its log lines."""
        for key, value in fields.items():
            if value:
                self.log_fields[key] = value
                if key in TAGS:
                    self.tags[key] = value
                    if self.transaction is not None:
                        self.transaction.set_tag(key, value)

    def child(self, op: str, name: str) -> Any:
        """A span under this message's transaction; use as a context manager, or finish() it."""
        if self.transaction is None:
            return _NO_SPAN
        span = self.transaction.start_child(op=op, name=name)
        for key, value in self.tags.items():
            span.set_tag(key, value)
        return span

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Make this message's transaction the current span (so an error reported inside joins
        it), with its fields bound for logging. Without a DSN there is no transaction, and only
        the fields are bound: log() puts the ids on a line."""
        if self.transaction is None:
            with bound(**self.log_fields):
                yield
            return
        with sentry_sdk.new_scope() as scope:
            scope.span = self.transaction
            for key, value in self.tags.items():
                scope.set_tag(key, value)
            with bound(**self.log_fields):
                yield

    def log(self, logger: logging.Logger, level: int, message: str, *args: Any) -> None:
        """A log line about this message, carrying its trace and span ids and its fields."""
        if self.transaction is not None:
            with self.active():
                logger.log(level, message, *args)
        elif logger.isEnabledFor(level):
            logger.log(
                level, message, *args, extra={"trace_id": self.trace_id, "span_id": self.span_id, **self.log_fields}
            )

    @contextlib.contextmanager
    def sending(self, task_name: str) -> Iterator[dict[str, Any]]:
        """Headers for the task message that starts this message's chain, to send inside this
        block, so the worker's sentry-sdk continues this trace: `sentry-trace` and `baggage`, as
        sentry-sdk's Celery integration writes them when it sends a task. With a DSN they come
        from a queue.submit.celery span, current while the message is sent (sentry-sdk's own
        publish span nests under it), as that integration makes it.

        They go at the top of the message's headers and again under "headers": Celery copies
        only that nested dict into the worker's task.request.headers (celery/celery#4875), which
        is where sentry-sdk looks for them."""
        if self.transaction is None:
            # The ids and the upstream's sampling decision: its baggage is not passed on
            # unread (sentry-sdk refuses some values, see _transaction).
            trace: dict[str, Any] = {"sentry-trace": f"{self.trace_id}-{self.span_id}{self._sampled}"}
            yield {**trace, "headers": dict(trace)}
            return
        with self.active(), self.child("queue.submit.celery", task_name) as span:
            trace = dict(span.iter_headers())
            # For the latency the worker's transaction reports (messaging.message.receive.latency).
            trace["sentry-task-enqueued-time"] = time.time()
            yield {**trace, "headers": dict(trace)}

    def finish(self, status: str = "ok") -> None:
        if not self._finished:
            self._finished = True
            if self.transaction is not None:
                self.transaction.set_status(status)
                self.transaction.finish()


class RecordTrace(MessageTrace):
    """One Kafka record's trace in ingest: continued from the record's headers (incoming_headers)
    or new. Batch work (the inbox insert) gets a span in every record's transaction, each as long
    as the batch operation; the trace ends once the record's pipeline is handed to the broker (or
    it was stored as a duplicate or dead letter)."""

    def __init__(self, record: Record) -> None:
        super().__init__(
            incoming_headers(record),
            op="queue.process",
            name="whatsapp.ingest",
            data={
                "messaging.destination.name": record.topic,
                "messaging.message.id": f"{record.topic}[{record.partition}]@{record.offset}",
            },
        )


@contextlib.contextmanager
def message_trace(trace_id: str | None, *, name: str, processing_id: str) -> Iterator[None]:
    """Continue a message's trace from the id stored on its inbox row (the sweeper, requeue,
    a record read again), so the tasks sent inside join that trace. The parent span is not
    known any more, so a new one stands in for it."""
    headers = {"sentry-trace": f"{trace_id}-{uuid.uuid4().hex[16:]}"} if trace_id and _TRACE_ID.match(trace_id) else {}
    with sentry_sdk.isolation_scope() as scope:
        scope.set_tag("processing_id", processing_id)
        transaction = sentry_sdk.continue_trace(headers, op="queue.submit", name=name, source="task")
        # Without a DSN the ids are bound too: they are what stamp_trace sends on.
        ids = {} if recording() else {"trace_id": transaction.trace_id, "span_id": transaction.span_id}
        with sentry_sdk.start_transaction(transaction), bound(processing_id=processing_id, **ids):
            yield


# --- tasks -------------------------------------------------------------------------------------
def task_trace(request: Any) -> dict[str, str]:
    """The trace a task message carries (its `sentry-trace` header, as MessageTrace.sending
    and stamp_trace write it, and sentry-sdk's Celery integration too), as log fields: its
    trace id and a span id of the task's own. Empty when it carries none.

    Without a DSN this, bound to the task's log context, is the whole of the task's trace:
    sentry-sdk's Celery integration would wrap every task and every send in an unsampled
    transaction only to carry these two ids (about 5% of a worker's time, profiled)."""
    headers = getattr(request, "headers", None) or {}
    found = _SENTRY_TRACE.match(str(headers.get("sentry-trace") or "")) if isinstance(headers, dict) else None
    if found is None:
        return {}
    return {"trace_id": found.group(1), "span_id": uuid.uuid4().hex[16:]}


def stamp_trace(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Celery's before_task_publish, when no DSN is set: a task sent without trace headers
    (the next of a chain, a retry, an errback) carries the trace of the code sending it,
    as bound to the log context (by the running task, or by message_trace), at the top of
    the message's headers and under "headers", as MessageTrace.sending writes them.
    With a DSN, sentry-sdk's Celery integration writes them."""
    if headers is None or "sentry-trace" in headers or recording():
        return
    # Not sentry-sdk's current span: without a DSN a span() opened in a task starts a trace
    # of its own, which is not the message's.
    fields = context()
    trace_id, span_id = fields.get("trace_id"), fields.get("span_id")
    if not trace_id or not span_id:
        return
    value = f"{trace_id}-{span_id}"
    headers["sentry-trace"] = value
    nested = headers.get("headers")
    if isinstance(nested, dict):
        nested.setdefault("sentry-trace", value)
    else:
        headers["headers"] = {"sentry-trace": value}


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
    known = {**{k: v for k, v in context().items() if k in TAGS}, **{k: v for k, v in tags.items() if v}}
    with sentry_sdk.start_span(op=op, name=name) as current:
        for key, value in known.items():
            current.set_tag(key, str(value))
        yield current


def note_message(message: Any) -> None:
    """Inside that message's task, add its lead and intent to the log lines and its intent
    to the Sentry tags. Elsewhere (a test calling the saga directly) it does nothing."""
    if context().get("processing_id") != message.processing_id:
        return
    bind(lead_id=message.lead_id, intent=message.intent)
    tag_task(intent=message.intent)
