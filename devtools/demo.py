"""`make demo`: push a sample stream through the whole pipeline and show what became of it.

Starts whatever is missing (Postgres, Redis, a Kafka broker) from pip
packages under ./var, uses a fresh database and topic so the table shows this
run only, runs a real Celery worker and the real ingest command, then stops
everything it started. Run as `python -m devtools.demo`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devtools import ROOT, VAR
from devtools.services import create_database, create_topic, ensure_services
from devtools.urls import with_path

DEMO_DB = "whatsapp_demo"
DEMO_REDIS_DB = "/12"


class OutsideWorld(BaseHTTPRequestHandler):
    """Stands in for the businesses' CRMs (one accepts, one refuses everything)
    and for the WhatsApp Cloud API (accepts every message)."""

    sent = 0

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path.endswith("/messages") and request.get("status") == "read":
            status, body = 200, b'{"success": true}'  # a read receipt (whatsapp.read_receipts)
        elif self.path.endswith("/messages"):
            OutsideWorld.sent += 1
            status = 200
            body = json.dumps(
                {
                    "messaging_product": "whatsapp",
                    "contacts": [{"input": request.get("to"), "wa_id": request.get("to")}],
                    "messages": [{"id": f"wamid.demo{OutsideWorld.sent:04d}"}],
                }
            ).encode()
        else:
            status = 200 if self.path.startswith("/acme") else 422
            body = b'{"ok": true}' if status == 200 else b'{"error": "unknown account"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def prepare_environment() -> list:
    os.environ.setdefault("SECRET_KEY", "demo-only-secret-key-never-use-in-production-0123456789")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("INGEST_METRICS_PORT", "0")  # the demo scrapes nothing; leave the port to a real ingest
    urls, started = ensure_services(VAR / "demo-services")
    os.environ["DATABASE_URL"] = with_path(urls["DATABASE_URL"], f"/{DEMO_DB}")
    os.environ["REDIS_URL"] = os.environ["CELERY_BROKER_URL"] = with_path(urls["REDIS_URL"], DEMO_REDIS_DB)
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = urls["KAFKA_BOOTSTRAP_SERVERS"]
    os.environ["KAFKA_RESULT_TOPIC"] = f"ai.process.result.demo-{int(time.time())}"
    os.environ["KAFKA_GROUP_ID"] = f"whatsapp-handler-demo-{int(time.time())}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ.setdefault("WHATSAPP_ACCESS_TOKEN", "demo-token")
    # The stand-in CRM is a local server over plain http, which production refuses.
    os.environ["SALES_WEBHOOK_ALLOW_HTTP"] = "1"
    os.environ["SALES_WEBHOOK_ALLOWED_HOSTS"] = "127.0.0.1,localhost"
    create_database(os.environ["DATABASE_URL"], replace=True)
    return started


def load_businesses(webhook_base: str) -> None:
    from leads.models import Business, Product

    acme = Business.objects.create(
        business_id="acme-bakery",
        tenant_id="tenant-acme",
        display_name="Acme Bakery",
        phone_number_id="106540352242922",
        sales_webhook_url=f"{webhook_base}/acme",
        sales_webhook_secret="demo-secret",
    )
    for sku, name, price, stock in [
        ("SD-01", "sourdough loaf", "6.50", 40),
        ("CR-02", "croissant", "2.20", 120),
        ("BG-03", "baguette", "3.10", 0),
    ]:
        Product.objects.create(business=acme, sku=sku, name=name, price=price, stock=stock)
    corner = Business.objects.create(
        business_id="corner-cafe",
        tenant_id="tenant-corner",
        display_name="Corner Cafe",
        sales_webhook_url=f"{webhook_base}/corner",
    )
    Product.objects.create(business=corner, sku="ES-01", name="espresso beans", price="14.00", stock=30)


# What the customers wrote, by intent: realistic enough that a log line leaking one would be noticed.
DEMO_TEXTS = {
    "ORDER_REQUEST": "Hi, I'd like 2 sourdough loaves for Friday",
    "PRICING_INQUIRY": "Hola, cuanto cuestan los croissants?",
    "AVAILABILITY_INQUIRY": "Do you have baguettes today?",
    "COMPLAINT": "O pao chegou frio e atrasado",
    "SCHEDULE_CALL": "Can someone call me Friday afternoon?",
    "UNKNOWN": "lol ok",
}


def sample_stream() -> list[tuple[bytes | None, bytes]]:
    """Every intent, a few low-confidence ones, duplicates, invalid records,
    and one message whose sales notification the CRM refuses."""

    def ev(
        n: int, intent: str, business: str = "acme-bakery", tenant: str = "tenant-acme", **extra: Any
    ) -> dict[str, Any]:
        body = {
            "schema_version": 1,
            "processing_id": f"demo-{n:03d}",
            "lead_id": f"lead-{n % 9}",
            "business_id": business,
            "tenant_id": tenant,
            "message_id": f"wamid.demo{n:03d}",
            "customer": {"wa_id": f"1555010{n:04d}", "name": "Demo Customer"},
            "message": {"text": f"{DEMO_TEXTS.get(intent, 'Hello?')} (message {n})", "received_at": received_at},
            "intent": intent,
            "confidence": 0.93,
            "entities": {},
            "ai": {"model": "intent-v3", "processing_ms": 120 + n},
        }
        body.update(extra)
        return body

    products = {"products": [{"sku": "SD-01", "name": "sourdough loaf", "quantity": 2}]}
    received_at = datetime.now(UTC).isoformat()
    # A callback three days ahead, on the hour.
    call_at = (datetime.now(UTC) + timedelta(days=3)).replace(hour=15, minute=0, second=0, microsecond=0).isoformat()
    events = []
    n = 0
    for _ in range(4):
        events += [
            ev(n + 1, "ORDER_REQUEST", entities=products),
            ev(
                n + 2,
                "PRICING_INQUIRY",
                entities={"products": [{"sku": "CR-02", "name": "croissant"}], "language": "es"},
            ),
            ev(n + 3, "AVAILABILITY_INQUIRY", entities={"products": [{"sku": "BG-03", "name": "baguette"}]}),
            ev(n + 4, "COMPLAINT", entities={"severity": "medium", "language": "pt-BR"}),
            ev(n + 5, "SCHEDULE_CALL", entities={"preferred_time": call_at}),
            ev(n + 6, "UNKNOWN"),
            ev(n + 7, "ORDER_REQUEST", confidence=0.6, entities=products),
            ev(n + 8, "ORDER_REQUEST", entities={"products": [{"sku": "BG-03", "name": "baguette"}]}),
        ]
        n += 8
    events.append(ev(n + 1, "COMPLAINT", entities={"severity": "high"}))
    events.append(
        ev(
            n + 2,
            "PRICING_INQUIRY",
            business="corner-cafe",
            tenant="tenant-corner",
            entities={"products": [{"sku": "ES-01", "name": "espresso beans"}]},
        )
    )
    records = [(e["lead_id"].encode(), json.dumps(e).encode()) for e in events]
    records += records[:3]  # the upstream service sent three twice
    records += [
        (None, b"not json at all"),
        (None, json.dumps(ev(900, "ORDER_REQUEST", confidence=1.5)).encode()),
        (None, json.dumps(ev(901, "PRICING_INQUIRY", business="no-such-shop")).encode()),
        (None, json.dumps(ev(902, "PRICING_INQUIRY", tenant="tenant-other")).encode()),
        (None, json.dumps(ev(903, "PRICING_INQUIRY", schema_version=2)).encode()),
    ]
    return records


def produce(records: list[tuple[bytes | None, bytes]]) -> None:
    from confluent_kafka import Producer

    bootstrap, topic = os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["KAFKA_RESULT_TOPIC"]
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    if producer.flush(60):
        raise SystemExit("demo: the broker did not take every record")


def accounted() -> tuple[int, int]:
    from dlq.models import DeadLetter
    from whatsapp.models import DuplicateDelivery, ProcessedMessage

    done = (
        ProcessedMessage.objects.count()
        + DuplicateDelivery.objects.count()
        + DeadLetter.objects.filter(stage="ingest").count()
    )
    busy = ProcessedMessage.objects.filter(status__in=["RECEIVED", "PROCESSING"]).count()
    return done, busy


def print_table(sent: int, elapsed: float) -> None:
    from dlq.models import DeadLetter
    from whatsapp.stats import pipeline_stats

    stats = pipeline_stats()
    rows = [
        ("records sent to Kafka", sent),
        ("processed", stats["processed"]),
        ("duplicates", stats["duplicates"]),
        ("dead-lettered", stats["dead_letters"]["total"]),
    ]
    for entry in DeadLetter.objects.order_by("stage", "reason").values("stage", "reason").distinct():
        count = DeadLetter.objects.filter(**entry).count()
        rows.append((f"  {entry['reason']} (at {entry['stage']})", count))
    for label, key in [
        ("orders", "orders"),
        ("support tickets", "tickets"),
        ("sales notifications", "sales_notifications"),
        ("review flags", "review_flags"),
        ("callbacks", "callbacks"),
        ("replies to customers", "replies"),
    ]:
        by_status = stats[key]
        detail = ", ".join(f"{v} {k.lower()}" for k, v in sorted(by_status.items()))
        rows.append((label, f"{sum(by_status.values())}" + (f"  ({detail})" if detail else "")))
    width = max(len(r[0]) for r in rows)
    print()
    print(f"What became of the sample stream ({elapsed:.0f}s):")
    print("-" * (width + 30))
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print("-" * (width + 30))
    print(
        "Every record ended as processed, duplicate or dead-lettered;"
        " `python manage.py pipeline_stats --json` has the same counts."
    )


def main() -> int:
    started = prepare_environment()
    children: list[subprocess.Popen] = []
    webhook = ThreadingHTTPServer(("127.0.0.1", 0), OutsideWorld)
    threading.Thread(target=webhook.serve_forever, daemon=True).start()
    logs = VAR / "demo-logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        outside = f"http://127.0.0.1:{webhook.server_address[1]}"
        os.environ["WHATSAPP_GRAPH_BASE_URL"] = outside
        load_businesses(outside)
        create_topic({"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"]}, os.environ["KAFKA_RESULT_TOPIC"], 3)
        env = dict(os.environ)
        for name, argv in [
            (
                "worker",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "-c",
                    "2",
                    "-Q",
                    "pipeline,webhooks,whatsapp",
                    "--without-gossip",
                    "--without-mingle",
                    "-l",
                    "WARNING",
                ],
            ),
            ("ingest", [sys.executable, "manage.py", "ingest_kafka"]),
        ]:
            # The child keeps its own copy of the log's descriptor; ours can close at once.
            with open(logs / f"{name}.log", "wb") as log:
                children.append(
                    subprocess.Popen(
                        argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
        records = sample_stream()
        begin = time.monotonic()
        produce(records)
        print(f"demo: sent {len(records)} records to {os.environ['KAFKA_RESULT_TOPIC']}; waiting for the pipeline...")
        deadline = begin + 240
        while time.monotonic() < deadline:
            done, busy = accounted()
            if done >= len(records) and busy == 0:
                break
            if any(child.poll() is not None for child in children):
                raise SystemExit(f"demo: a process exited early; see {logs}")
            time.sleep(0.5)
        else:
            raise SystemExit(f"demo: not every record was accounted for within 240s; see {logs}")
        print_table(len(records), time.monotonic() - begin)
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
        webhook.shutdown()
        for service in reversed(started):
            service.stop()


if __name__ == "__main__":
    sys.exit(main())
