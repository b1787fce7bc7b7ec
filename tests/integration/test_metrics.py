"""Metrics and logs of a real run: the demo stream plus more, 200 records in all, through
ingest and two Celery worker processes, with a web process serving /metrics.

One run, two checks a user makes, each split into subtests (pytest's `subtests`) so that one
that fails does not hide the others: the counters on /metrics (added up across every process
through PROMETHEUS_MULTIPROC_DIR) equal what the database says happened, and no log line
at INFO or above carries a customer's phone number, name or text, the access token or a
webhook secret.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from confluent_kafka import Producer
from django.db.models import Count

from devtools.services import free_port
from tests.support.events import event, later_iso
from tests.support.observability import Scrape, json_lines
from tests.support.processes import ManagedProcess, wait_until

ACCESS_TOKEN = "demo-token"
# What Prometheus sends to the web's /metrics (METRICS_TOKEN).
METRICS_TOKEN = "scrape-token-for-the-metrics-test"
TOTAL = 200
# A label may only name one of these: never a lead, a message or a customer.
ALLOWED_LABELS = {
    "business_id",
    "source",
    "reason",
    "stage",
    "intent",
    "action",
    "status",
    "from",
    "to",
    "circuit",
    "topic",
    "partition",
    "queue",
    "le",
    "outcome",
}


def more_records(count: int) -> list[tuple[bytes | None, bytes]]:
    """Beyond the demo stream: orders the corner cafe's CRM refuses (so the order is
    compensated), every intent for the bakery, duplicates and invalid records."""
    from devtools.demo import DEMO_TEXTS

    received_at = datetime.now(UTC).isoformat()
    intents = [
        ("ORDER_REQUEST", {"products": [{"sku": "SD-01", "name": "sourdough loaf", "quantity": 1}]}),
        ("PRICING_INQUIRY", {"products": [{"sku": "CR-02", "name": "croissant"}]}),
        ("AVAILABILITY_INQUIRY", {"products": [{"sku": "BG-03", "name": "baguette"}]}),
        ("COMPLAINT", {"severity": "high"}),
        ("SCHEDULE_CALL", {"preferred_time": later_iso()}),
        ("UNKNOWN", {}),
    ]

    def ev(n: int, intent: str, entities: dict, **overrides) -> dict:
        body = event(
            f"more-{n:03d}",
            lead_id=f"lead-x{n % 23}",
            message_id=f"wamid.more{n:03d}",
            customer={"wa_id": f"1555020{n:04d}", "name": f"Extra Customer {n}"},
            message={"text": f"{DEMO_TEXTS[intent]} (extra {n})", "received_at": received_at},
            intent=intent,
            entities=entities,
            ai={"model": "intent-v3", "processing_ms": 50 + n},
        )
        body.update(overrides)
        return body

    events = [
        ev(
            n,
            "ORDER_REQUEST",
            {"products": [{"sku": "ES-01", "name": "espresso beans", "quantity": 1}]},
            business_id="corner-cafe",
            tenant_id="tenant-corner",
        )
        for n in range(10)
    ]
    invalid = 8
    duplicated = 10
    for n in range(10, 10 + count - len(events) - invalid - duplicated):
        intent, entities = intents[n % len(intents)]
        events.append(ev(n, intent, entities))
    records = [(e["lead_id"].encode(), json.dumps(e).encode()) for e in events]
    records += records[10 : 10 + duplicated]
    bad = [ev(900 + n, "PRICING_INQUIRY", {}) for n in range(invalid)]
    bad[0]["confidence"] = 1.5
    bad[1]["business_id"] = "no-such-shop"
    bad[2]["tenant_id"] = "tenant-other"
    bad[3]["schema_version"] = 2
    del bad[4]["customer"]["wa_id"]
    records += [(None, json.dumps(b).encode()) for b in bad[:5]]
    records += [(None, b"not json"), (None, b"\xff\xfe"), (None, b"{}")]
    assert len(records) == count
    return records


def produce_unbatched(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    """One record per produce request, so the broker's high watermarks are exact (Tansu
    reports the last batch's base offset + 1 as the high watermark)."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0, "batch.num.messages": 1})
    for key, value in records:
        producer.produce(topic, key=key, value=value)
        producer.flush(30)


def secrets_in(records: list[tuple[bytes | None, bytes]]) -> set[str]:
    """Every customer phone number, name and text in the stream, and the token and secrets."""
    found = {ACCESS_TOKEN, "demo-secret"}
    for _, value in records:
        try:
            body = json.loads(value)
        except ValueError:
            continue
        if not isinstance(body, dict):
            continue
        customer, message = body.get("customer") or {}, body.get("message") or {}
        found.update(v for v in (customer.get("wa_id"), customer.get("name"), message.get("text")) if v)
    return found


@pytest.mark.slow
def test_metrics_equal_database_counts_and_logs_hold_no_customer_data(
    bootstrap, topic, child_env, processes, start_worker, start_ingest, tmp_path, subtests
):
    """One pipeline run; each check a subtest, so one that fails does not hide the others."""
    from devtools.demo import load_businesses, sample_stream
    from devtools.standin import StandInCloudApi
    from dlq.models import DeadLetter
    from leads.models import LeadActivity
    from whatsapp.models import DuplicateDelivery, OutboundMessage, ProcessedMessage, SagaStep

    outside = StandInCloudApi().start()
    outside_url = outside.url
    load_businesses(outside_url)
    records = sample_stream() + more_records(TOTAL - len(sample_stream()))
    assert len(records) == TOTAL

    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    web_port, ingest_port = free_port(), free_port()
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(prom_dir),
        "WHATSAPP_GRAPH_BASE_URL": outside_url,
        "METRICS_TOKEN": METRICS_TOKEN,
        "WHATSAPP_ACCESS_TOKEN": ACCESS_TOKEN,
        "KAFKA_RESULT_TOPIC": topic,
        "KAFKA_GROUP_ID": f"g-{topic}",
    }
    try:
        web = ManagedProcess(
            "web",
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{web_port}"],
            {**child_env, **env},
        )
        processes.append(web)
        workers = [start_worker(concurrency=2, name=name, env=env) for name in ("w1", "w2")]
        metrics_url = f"http://127.0.0.1:{web_port}/metrics"
        wait_until(lambda: _answers(f"http://127.0.0.1:{web_port}/healthz"), timeout=30, message="the web process")
        with subtests.test("/metrics refuses a scrape without the token"):
            refused = requests.get(metrics_url, timeout=20)
            assert refused.status_code == 401 and b"celery_queue_length" not in refused.content

        produce_unbatched(bootstrap, topic, records)
        with subtests.test("the consumer lag counts every record before ingest starts"):
            before = Scrape.get(metrics_url, METRICS_TOKEN)
            assert sum(before.by("kafka_consumer_lag", "partition").values()) == TOTAL, before.text
            assert set(before.by("kafka_consumer_lag", "partition")) <= {"0", "1", "2"}

        ingest = start_ingest(topic, env={**env, "INGEST_METRICS_PORT": str(ingest_port)})

        def accounted() -> bool:
            done = (
                ProcessedMessage.objects.count()
                + DuplicateDelivery.objects.count()
                + DeadLetter.objects.filter(stage="ingest").count()
            )
            return done == TOTAL and not ProcessedMessage.objects.filter(status__in=["RECEIVED", "PROCESSING"]).exists()

        wait_until(accounted, timeout=150, interval=0.5, message=f"all {TOTAL} records to be accounted for")

        # --- what the database says happened ------------------------------------------------
        received = dict(ProcessedMessage.objects.values_list("business_id").annotate(n=Count("id")))
        dead = {
            (r["stage"], r["reason"]): r["n"]
            for r in DeadLetter.objects.values("stage", "reason").annotate(n=Count("id"))
        }
        invalid = {reason: n for (stage, reason), n in dead.items() if stage == "ingest"}
        steps = Counter(SagaStep.objects.values_list("action", "status"))
        ever_succeeded = {"SUCCEEDED", "COMPENSATED", "COMPENSATION_FAILED"}
        actions: Counter = Counter()
        compensations: Counter = Counter()
        for (action, status), n in steps.items():
            if status in ever_succeeded:
                actions[(action, "succeeded")] += n
            if status == "FAILED":
                actions[(action, "failed")] += n
            if status == "COMPENSATED":
                compensations[(action, "compensated")] += n
            if status == "COMPENSATION_FAILED":
                compensations[(action, "failed")] += n
        replies = Counter(OutboundMessage.objects.values_list("status", flat=True))
        actions[("REPLY", "succeeded")] += replies["SENT"]
        actions[("REPLY", "skipped")] += replies["SKIPPED_DISABLED"] + replies["SKIPPED_WINDOW_CLOSED"]
        actions[("REPLY", "failed")] += sum(n for (stage, _), n in dead.items() if stage == "reply")
        moves = Counter(LeadActivity.objects.filter(kind="state_changed").values_list("from_state", "to_state"))
        planned = Counter(LeadActivity.objects.filter(kind="message_received").values_list("detail__intent", flat=True))
        processed = dict(
            ProcessedMessage.objects.filter(status="PROCESSED").values_list("intent").annotate(n=Count("id"))
        )
        open_dlq = dict(DeadLetter.objects.filter(status="OPEN").values_list("reason").annotate(n=Count("id")))
        # The run must have exercised what the counters count (else every check below means little).
        assert DuplicateDelivery.objects.count() == 13 and len(invalid) >= 4 and compensations and moves
        assert ("NOTIFY_SALES", "failed") in actions and actions[("REPLY", "succeeded")] > 0

        # --- what /metrics says, once the last commits have been counted ---------------------
        def scrape_matches() -> Scrape | None:
            scrape = Scrape.get(metrics_url, METRICS_TOKEN)
            return (
                scrape
                if scrape.by("message_dlq_total", "stage", "reason") == dead
                and scrape.by("whatsapp_action_executed_total", "action", "status")
                == {k: v for k, v in actions.items() if v}
                and scrape.by("pipeline_duration_seconds_count", "intent") == processed
                else None
            )

        try:
            scrape = wait_until(scrape_matches, timeout=15, interval=0.5, message="/metrics to match the database")
        except AssertionError:
            scrape = Scrape.get(metrics_url, METRICS_TOKEN)
        with subtests.test("messages received, invalid, duplicated and dead-lettered equal the database"):
            assert scrape.by("whatsapp_messages_received_total", "business_id") == received
            assert scrape.by("whatsapp_messages_received_total", "source") == {"kafka": sum(received.values())}
            assert scrape.by("whatsapp_messages_invalid_total", "reason") == invalid
            assert scrape.value("message_duplicate_total") == DuplicateDelivery.objects.count()
            assert scrape.by("message_dlq_total", "stage", "reason") == dead
        with subtests.test("actions, compensations, lead moves and intents equal the database"):
            assert scrape.by("whatsapp_action_executed_total", "action", "status") == {
                k: v for k, v in actions.items() if v
            }
            assert scrape.by("action_compensation_total", "action", "status") == dict(compensations)
            assert scrape.by("lead_state_changed_total", "from", "to") == dict(moves)
            assert scrape.by("ai_intent_detected_total", "intent") == dict(planned)
        with subtests.test("histograms: one observation per planned or processed message, +Inf holds them all"):
            assert scrape.by("ai_intent_confidence_count", "intent") == dict(planned)
            assert scrape.by("ai_processing_duration_seconds_count", "intent") == dict(planned)
            assert scrape.by("pipeline_duration_seconds_count", "intent") == processed
            for name in ("ai_intent_confidence", "pipeline_duration_seconds", "pipeline_stage_duration_seconds"):
                infinite = scrape.by(f"{name}_bucket", "le").get("+Inf")
                assert infinite == sum(
                    scrape.by(
                        f"{name}_count", "intent" if name != "pipeline_stage_duration_seconds" else "stage"
                    ).values()
                ), name
            stages = scrape.by("pipeline_stage_duration_seconds_count", "stage")
            assert stages["dedupe"] >= ProcessedMessage.objects.count()
            assert stages["ingest"] == scrape.value("kafka_ingest_batches_total") > 0
        with subtests.test("the gauges read at scrape time: open dead letters, stuck messages, queues, breakers, lag"):
            assert scrape.by("dlq_open_entries", "reason") == open_dlq
            assert scrape.value("inbox_stuck_messages") == 0
            assert {ls["queue"] for ls, _ in scrape.samples["celery_queue_length"]} == {
                "pipeline",
                "webhooks",
                "whatsapp",
            }
            breaker = f"webhook:{outside.url}"
            assert (
                scrape.samples["circuit_breaker_state"]
                and ({"circuit": breaker}, 0.0) in scrape.samples["circuit_breaker_state"]
            ), scrape.text
            wait_until(
                lambda: sum(Scrape.get(metrics_url, METRICS_TOKEN).by("kafka_consumer_lag", "partition").values()) == 0,
                timeout=15,
                message="the consumer lag to reach 0",
            )
        with subtests.test("counted in every process: ingest and several Celery children wrote their own files"):
            assert len({p.name.rsplit("_", 1)[-1] for p in Path(prom_dir).glob("counter_*.db")}) >= 3
        with subtests.test("no lead, message or customer in any label"):
            ids = set(ProcessedMessage.objects.values_list("processing_id", flat=True)) | set(
                ProcessedMessage.objects.values_list("lead_id", flat=True)
            )
            for name, samples in scrape.samples.items():
                for labels, _ in samples:
                    assert set(labels) <= ALLOWED_LABELS, (name, labels)
                    assert not ids & set(labels.values()), (name, labels)
        with subtests.test("ingest's own port serves the counts it made"):
            alone = Scrape.get(f"http://127.0.0.1:{ingest_port}/metrics")
            assert alone.by("whatsapp_messages_received_total", "business_id") == received
            assert alone.by("whatsapp_messages_invalid_total", "reason") == invalid
            assert alone.value("message_duplicate_total") == DuplicateDelivery.objects.count()
            assert "celery_queue_length" not in alone.samples  # scrape-time gauges are the web's

        # --- the logs: JSON lines, and nothing of the customers' or the secrets -------------
        for proc in [ingest, web, *workers]:
            proc.stop()
        outputs = {proc.log_path.name: proc.log_path.read_text(errors="replace") for proc in [ingest, web, *workers]}
        lines = [line for text in outputs.values() for line in json_lines(text)]
        with subtests.test("every process logs JSON lines at INFO or above"):
            assert len(lines) > TOTAL
            assert all({"timestamp", "level", "service", "message"} <= set(line) for line in lines)
            assert {line["service"] for line in lines} >= {"ingest", "worker", "web"}
            assert {line["level"] for line in lines} <= {"INFO", "WARNING", "ERROR", "CRITICAL"}
        with subtests.test("every line about a message carries the trace id stored on its inbox row"):
            # Without a Sentry DSN the trace ids still travel (a message delivered once).
            traces = dict(
                ProcessedMessage.objects.exclude(
                    processing_id__in=DuplicateDelivery.objects.values("processing_id")
                ).values_list("processing_id", "trace_id")
            )
            about = [line for line in lines if line.get("processing_id") in traces]
            assert {line["processing_id"] for line in about} == set(traces)
            assert all(line.get("trace_id") == traces[line["processing_id"]] for line in about)
            assert {line["service"] for line in about} == {"ingest", "worker"}
        with subtests.test("no log holds a customer's phone number, name or text, the token or a secret"):
            secrets = secrets_in(records)
            assert len(secrets) > 3 * 150
            for name, text in outputs.items():
                leaked = sorted(s for s in secrets if s in text)
                assert not leaked, f"{name} logs {leaked[:5]}"
    finally:
        outside.stop()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
