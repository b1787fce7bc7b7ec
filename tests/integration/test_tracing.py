"""One trace per message, across ingest and every Celery task, seen through Sentry's own
transport: the SDK sends its envelopes to a local HTTP server standing in for Sentry
(SENTRY_DSN=http://public@127.0.0.1:PORT/1), and the test reads what arrived."""

from __future__ import annotations

import itertools
import json

import pytest

from tests.support.events import encode, event
from tests.support.kafka import produce
from tests.support.observability import SentryIngest, json_lines
from tests.support.processes import wait_until

UPSTREAM_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
UPSTREAM_SPAN = "00f067aa0ba902b7"
W3C_TRACE = "0af7651916cd43dd8448eb211c80319c"
PHONE_NUMBER_ID = "106540352242922"
TOKEN = "EAAtracing-test-token-0123456789"
# The tasks of an order with a sales notification and a reply, in chain order.
CHAIN = [
    "whatsapp.ingest",
    "whatsapp.dedupe",
    "whatsapp.intent",
    "whatsapp.execute_action:CREATE_ORDER",
    "whatsapp.execute_action:NOTIFY_SALES",
    "whatsapp.reply_and_finish",
]


def _key(transaction: dict) -> str:
    action = transaction.get("tags", {}).get("action")
    name = transaction["transaction"]
    return f"{name}:{action}" if name == "whatsapp.execute_action" else name


@pytest.fixture
def sentry():
    ingest = SentryIngest()
    yield ingest
    ingest.close()


@pytest.mark.slow
def test_one_trace_from_kafka_record_to_reply(
    bootstrap, topic, business, start_worker, start_ingest, httpserver, sentry
):
    from whatsapp.models import ProcessedMessage

    httpserver.expect_request("/crm", method="POST").respond_with_json({"ok": True})
    httpserver.expect_request(f"/v21.0/{PHONE_NUMBER_ID}/messages", method="POST").respond_with_json(
        {
            "messaging_product": "whatsapp",
            "contacts": [{"input": "15550123456", "wa_id": "15550123456"}],
            "messages": [{"id": "wamid.reply-1"}],
        }
    )
    business.sales_webhook_url = httpserver.url_for("/crm")
    business.phone_number_id = PHONE_NUMBER_ID
    business.save()
    env = {
        "SENTRY_DSN": sentry.dsn,
        "SENTRY_TRACES_SAMPLE_RATE": "1.0",
        "WHATSAPP_ACCESS_TOKEN": TOKEN,
        "WHATSAPP_GRAPH_BASE_URL": httpserver.url_for("").rstrip("/"),
    }
    worker = start_worker(concurrency=1, env=env)
    ingest = start_ingest(topic, env=env)

    # The upstream service traced with Sentry for one message and with W3C traceparent for another.
    order = event("trace-1")
    produce(
        bootstrap,
        topic,
        [(b"lead-123", encode(order))],
        headers=[
            ("sentry-trace", f"{UPSTREAM_TRACE}-{UPSTREAM_SPAN}-1".encode()),
            ("baggage", b"sentry-sample_rate=1.0"),
        ],
    )
    produce(
        bootstrap,
        topic,
        [(b"lead-456", encode(event("trace-2", lead_id="lead-456")))],
        headers=[("traceparent", f"00-{W3C_TRACE}-b7ad6b7169203331-01".encode())],
    )
    wait_until(
        lambda: ProcessedMessage.objects.filter(status="PROCESSED").count() == 2,
        timeout=60,
        message="both messages processed",
    )
    row = ProcessedMessage.objects.get(processing_id="trace-1")
    assert row.trace_id == UPSTREAM_TRACE
    assert ProcessedMessage.objects.get(processing_id="trace-2").trace_id == W3C_TRACE

    def arrived() -> dict[str, dict] | None:
        found = {_key(t): t for t in sentry.transactions() if t["contexts"]["trace"]["trace_id"] == UPSTREAM_TRACE}
        return found if set(CHAIN) <= set(found) else None

    by_name = wait_until(arrived, timeout=30, message="every transaction of the message at the Sentry stand-in")
    assert {t["contexts"]["trace"]["trace_id"] for t in sentry.transactions()} == {UPSTREAM_TRACE, W3C_TRACE}

    # Each transaction's parent is a span of the one before it: the span that sent its task
    # (the first one's parent is the upstream span from the record's header).
    spans = {t["contexts"]["trace"]["span_id"]: (name, t["contexts"]["trace"]) for name, t in by_name.items()}
    for name, transaction in by_name.items():
        for span in transaction["spans"]:
            spans[span["span_id"]] = (name, span)
    assert by_name["whatsapp.ingest"]["contexts"]["trace"]["parent_span_id"] == UPSTREAM_SPAN
    for before, after in itertools.pairwise(CHAIN):
        parent = by_name[after]["contexts"]["trace"]["parent_span_id"]
        assert spans[parent][0] == before, f"{after} was sent from {spans[parent][0]}, not {before}"
        assert spans[parent][1]["op"] == "queue.submit.celery"

    def ops(name: str) -> dict[str, dict]:
        return {span["op"]: span for span in by_name[name]["spans"]}

    assert {"whatsapp.validate", "whatsapp.tenant", "whatsapp.dedupe", "queue.submit.celery", "queue.publish"} <= set(
        ops("whatsapp.ingest")
    )
    ingest_spans = ops("whatsapp.ingest")
    assert ingest_spans["queue.publish"]["parent_span_id"] == ingest_spans["queue.submit.celery"]["span_id"]
    assert "whatsapp.dedupe" in ops("whatsapp.dedupe")
    assert {"whatsapp.tenant", "whatsapp.handler"} <= set(ops("whatsapp.intent"))
    for action in ("CREATE_ORDER", "NOTIFY_SALES"):
        span = ops(f"whatsapp.execute_action:{action}")["whatsapp.action"]
        assert span["description"] == action and span["tags"]["action"] == action
    # Outbound HTTP calls are children of the action (or read receipt, or reply) span that made them.
    for name, op in (
        ("whatsapp.execute_action:NOTIFY_SALES", "whatsapp.action"),
        ("whatsapp.reply_and_finish", "whatsapp.mark_read"),
        ("whatsapp.reply_and_finish", "whatsapp.reply"),
    ):
        http = [s for s in by_name[name]["spans"] if s["op"] == "http.client"]
        assert len(http) == (2 if name == "whatsapp.reply_and_finish" else 1), by_name[name]["spans"]
        ours = [s for s in http if s["parent_span_id"] == ops(name)[op]["span_id"]]
        assert len(ours) == 1, by_name[name]["spans"]
    # The tail's three parts, in one transaction: the read receipt, then the reply, then finish.
    tail = [s["op"] for s in by_name["whatsapp.reply_and_finish"]["spans"] if s["op"].startswith("whatsapp.")]
    assert tail == ["whatsapp.mark_read", "whatsapp.reply", "whatsapp.finish"], tail
    for name, transaction in by_name.items():
        assert transaction["tags"]["processing_id"] == "trace-1", name
        assert transaction["tags"]["intent"] == "ORDER_REQUEST", name
    for action in ("CREATE_ORDER", "NOTIFY_SALES"):
        assert by_name[f"whatsapp.execute_action:{action}"]["tags"]["action"] == action

    # Nothing of the customer's, nor the token, went to Sentry.
    sent = b"".join(sentry.raw).decode("utf-8", errors="replace")
    for private in (order["customer"]["wa_id"], order["customer"]["name"], order["message"]["text"], TOKEN):
        assert private not in sent

    # Every log line about the message, in ingest and the worker, carries the same trace id.
    lines = [
        line
        for proc in (ingest, worker)
        for line in json_lines(proc.output())
        if line.get("processing_id") == "trace-1"
    ]
    assert {line["service"] for line in lines} == {"ingest", "worker"}
    assert len(lines) >= len(CHAIN)
    assert {line.get("trace_id") for line in lines} == {UPSTREAM_TRACE}, json.dumps(lines, indent=1)[:3000]
    assert all(line.get("span_id") for line in lines)
