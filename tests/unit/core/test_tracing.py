"""One trace per message, seen through Sentry's own transport (a local HTTP server
standing in for Sentry), in this process: a record's trace continues upstream's,
the first task is sent in the record's trace, and a requeued or re-driven message
is sent in its stored trace. (Across a real ingest and worker:
tests/integration/test_tracing.py.)"""

from __future__ import annotations

import json

import pytest
import sentry_sdk
import sentry_sdk.transport

from tests.support.events import encode, event

UPSTREAM_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
UPSTREAM_SPAN = "00f067aa0ba902b7"
W3C_TRACE = "0af7651916cd43dd8448eb211c80319c"


class _Discard(sentry_sdk.transport.Transport):
    def capture_envelope(self, envelope) -> None:
        pass


@pytest.fixture(params=["no DSN", "a DSN"])
def dsn(request):
    """Both ways ingest traces: with a DSN (a Sentry client on this test's scope, sending
    nowhere) and without one (this process's own client)."""
    if request.param == "no DSN":
        yield None
        return
    with sentry_sdk.isolation_scope() as scope:
        scope.set_client(
            sentry_sdk.Client(dsn="http://public@127.0.0.1:9/1", traces_sample_rate=1.0, transport=_Discard)
        )
        yield request.param


def test_record_trace_continues_the_upstream_trace(dsn):
    from core.tracing import RecordTrace
    from whatsapp.kafka import Record

    def trace(*headers: tuple[str, bytes]) -> RecordTrace:
        return RecordTrace(Record(topic="t", partition=0, offset=1, value=b"{}", headers=list(headers)))

    sentry = trace(("sentry-trace", f"{UPSTREAM_TRACE}-{UPSTREAM_SPAN}-1".encode()))
    assert sentry.trace_id == UPSTREAM_TRACE and sentry.parent_span_id == UPSTREAM_SPAN
    w3c = trace(("traceparent", f"00-{W3C_TRACE}-b7ad6b7169203331-01".encode()))
    assert w3c.trace_id == W3C_TRACE and w3c.parent_span_id == "b7ad6b7169203331"
    both = trace(
        ("traceparent", f"00-{W3C_TRACE}-b7ad6b7169203331-01".encode()),
        ("sentry-trace", f"{UPSTREAM_TRACE}-{UPSTREAM_SPAN}".encode()),
    )
    assert both.trace_id == UPSTREAM_TRACE
    for garbage in (("traceparent", b"00-" + b"0" * 32 + b"-b7ad6b7169203331-01"), ("sentry-trace", b"nonsense")):
        fresh = trace(garbage)
        assert len(fresh.trace_id) == 32 and fresh.trace_id != "0" * 32 and fresh.parent_span_id is None
    for each in (sentry, w3c, both, fresh):
        assert len(each.span_id) == 16 and each.span_id != each.parent_span_id
        # Without a DSN nothing is sent, so no Sentry transaction is built at all.
        assert (each.transaction is not None) == (dsn is not None)
        if each.transaction is not None:
            assert (each.transaction.trace_id, each.transaction.span_id) == (each.trace_id, each.span_id)


def test_the_first_task_is_sent_in_the_records_trace(dsn, business, redis_client):
    """The chain's first task message carries the record's trace, where the worker's sentry-sdk
    reads it (the task's request headers), the ingest span as its parent."""
    from whatsapp.ingest.isolate import take_in_and_hand_off
    from whatsapp.kafka import Record

    record = Record(
        topic="t",
        partition=0,
        offset=3,
        value=encode(event("traced-1")),
        headers=[("sentry-trace", f"{UPSTREAM_TRACE}-{UPSTREAM_SPAN}-1".encode())],
    )
    take_in_and_hand_off([record])
    messages = [json.loads(m) for key in redis_client.keys("pipeline*") for m in redis_client.lrange(key, 0, -1)]
    assert [m["headers"]["id"] for m in messages] == ["traced-1:1:dedupe"]
    headers = messages[0]["headers"]
    trace_id, parent_span = headers["sentry-trace"].split("-")[:2]
    assert trace_id == UPSTREAM_TRACE and parent_span != UPSTREAM_SPAN
    assert headers["headers"]["sentry-trace"] == headers["sentry-trace"]


def test_requeued_and_redriven_messages_are_sent_in_their_stored_trace(business, redis_client):
    """hand_off without a live trace (requeue, the sweeper) continues the one on the inbox row:
    the task message on the broker carries it for the worker to join."""
    from whatsapp.ingest.intake import take_in
    from whatsapp.kafka import Record
    from whatsapp.models import ProcessedMessage
    from whatsapp.pipeline.hand_off import hand_off

    take_in([Record(topic="t", partition=0, offset=7, value=encode(event("redrive-1")))])
    row = ProcessedMessage.objects.get(processing_id="redrive-1")
    assert len(row.trace_id) == 32
    hand_off([("redrive-1", 1)])
    messages = [json.loads(m) for key in redis_client.keys("pipeline*") for m in redis_client.lrange(key, 0, -1)]
    assert len(messages) == 1
    assert messages[0]["headers"]["sentry-trace"].startswith(f"{row.trace_id}-")


def test_without_a_dsn_a_task_passes_its_trace_on_to_what_it_sends(business, redis_client):
    """No Sentry DSN, so no sentry-sdk Celery integration: a task's trace comes from its
    message's header (task_trace), is bound to its log lines, and goes on every task sent
    from inside it or from a stored trace (stamp_trace); a message sent with its own trace
    keeps it."""
    from types import SimpleNamespace

    from config.celery import app
    from config.logging import bound
    from core import tracing

    assert not tracing.recording()
    request = SimpleNamespace(headers={"sentry-trace": f"{UPSTREAM_TRACE}-{UPSTREAM_SPAN}"})
    fields = tracing.task_trace(request)
    assert fields["trace_id"] == UPSTREAM_TRACE and len(fields["span_id"]) == 16
    assert fields["span_id"] != UPSTREAM_SPAN
    assert tracing.task_trace(SimpleNamespace(headers=None)) == {}
    assert tracing.task_trace(SimpleNamespace(headers={"sentry-trace": "not-a-trace"})) == {}

    def sent() -> list[dict]:
        found = [
            json.loads(m)
            for key in redis_client.keys("*")
            if redis_client.type(key) == b"list"
            for m in redis_client.lrange(key, 0, -1)
        ]
        redis_client.flushdb()
        return [m["headers"] for m in found]

    with bound(**fields):
        app.signature("whatsapp.finish", args=("p-1", 1)).apply_async(task_id="p-1:1:finish")
        app.signature("whatsapp.finish", args=("p-2", 1)).apply_async(
            task_id="p-2:1:finish", headers={"sentry-trace": f"{W3C_TRACE}-{UPSTREAM_SPAN}"}
        )
    by_id = {h["id"]: h for h in sent()}
    assert by_id["p-1:1:finish"]["sentry-trace"] == f"{UPSTREAM_TRACE}-{fields['span_id']}"
    assert by_id["p-1:1:finish"]["headers"]["sentry-trace"] == by_id["p-1:1:finish"]["sentry-trace"]
    assert by_id["p-2:1:finish"]["sentry-trace"].startswith(W3C_TRACE), "its own trace is kept"

    stored = "5" * 32
    with tracing.message_trace(stored, name="whatsapp.requeue", processing_id="p-3"):
        app.signature("whatsapp.finish", args=("p-3", 1)).apply_async(task_id="p-3:1:finish")
    (headers,) = sent()
    assert headers["sentry-trace"].startswith(f"{stored}-")
    app.signature("whatsapp.finish", args=("p-4", 1)).apply_async(task_id="p-4:1:finish")
    (headers,) = sent()
    assert "sentry-trace" not in headers, "outside any trace, nothing is made up"
