"""Throughput and fairness, measured against a baseline in the same session.

    .venv/bin/python -m tests.benchmarks.throughput [--messages 1000] [--rounds 2]

Runs the same stream through real ingest and worker processes once per
variant, alternating variants round by round so a noisy machine slows all of
them alike, and prints each variant's median against the baseline's:

- throughput: messages per second with the default settings, against the
  baseline of a new Postgres connection per task (DATABASE_CONN_MAX_AGE=0,
  Celery's own default behaviour);
- fairness: how long a quiet business's 50 messages take behind another
  business's flood, with per-business lanes against one FIFO lane (a token
  bucket too large to ever run out).

Uses the services `make demo` uses (local ones if they answer, else embedded
ones under ./var) and a database of its own, whatsapp_bench.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC

from devtools import ROOT, VAR
from devtools.services import create_database, ensure_services
from devtools.urls import with_path

BENCH_DB = "whatsapp_bench"


def prepare() -> list:
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    urls, started = ensure_services(VAR / "bench-services")
    os.environ["DATABASE_URL"] = with_path(urls["DATABASE_URL"], f"/{BENCH_DB}")
    os.environ["REDIS_URL"] = os.environ["CELERY_BROKER_URL"] = with_path(urls["REDIS_URL"], "/10")
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = urls["KAFKA_BOOTSTRAP_SERVERS"]
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["KAFKA_SESSION_TIMEOUT_MS"] = "6000"
    # Its stand-in CRM is a local server over plain http, which production refuses.
    os.environ["SALES_WEBHOOK_ALLOW_HTTP"] = "1"
    os.environ["SALES_WEBHOOK_ALLOWED_HOSTS"] = "127.0.0.1,localhost"
    create_database(os.environ["DATABASE_URL"], replace=True)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return started


def reset_data() -> None:
    import redis
    from django.db import connection

    from leads.models import Business, Product

    with connection.cursor() as cursor:
        tables = [
            t
            for t in connection.introspection.table_names()
            if t.split("_")[0] in {"whatsapp", "leads", "dlq"} and t != "leads_leadactivity"
        ]
        # LeadActivity refuses DELETE row by row; TRUNCATE is for maintenance like this.
        cursor.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in [*tables, "leads_leadactivity"]) + " CASCADE")
    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    for business_id, tenant in [("acme-bakery", "tenant-acme"), ("corner-shop", "tenant-corner")]:
        biz = Business.objects.create(business_id=business_id, tenant_id=tenant, display_name=business_id)
        Product.objects.create(business=biz, sku="SD-01", name="sourdough loaf", price="6.50", stock=10_000_000)


def events(
    prefix: str, count: int, business: str = "acme-bakery", tenant: str = "tenant-acme"
) -> list[tuple[bytes, bytes]]:
    import json
    from datetime import datetime

    # Now, so every reply falls inside the 24-hour window as it would for live traffic.
    received_at = datetime.now(UTC).isoformat()
    out = []
    for i in range(count):
        intent = ["ORDER_REQUEST", "PRICING_INQUIRY", "COMPLAINT", "AVAILABILITY_INQUIRY"][i % 4]
        body = {
            "schema_version": 1,
            "processing_id": f"{prefix}-{i:06d}",
            "lead_id": f"{prefix}-lead-{i % 97}",
            "business_id": business,
            "tenant_id": tenant,
            "message_id": f"wamid.{prefix}{i}",
            "customer": {"wa_id": "15550100000", "name": "Bench"},
            "message": {"text": "(bench)", "received_at": received_at},
            "intent": intent,
            "confidence": 0.95,
            "entities": {"products": [{"sku": "SD-01", "name": "sourdough loaf", "quantity": 1}]}
            if intent == "ORDER_REQUEST"
            else {},
            "ai": {"model": "intent-v3", "processing_ms": 100},
        }
        out.append((body["lead_id"].encode(), json.dumps(body).encode()))
    return out


def produce(topic: str, records: list[tuple[bytes, bytes]]) -> None:
    from tests.support.kafka import produce as kafka_produce

    kafka_produce(os.environ["KAFKA_BOOTSTRAP_SERVERS"], topic, records)


class Stack:
    """Two worker processes of two and one ingest process on a fresh topic."""

    def __init__(self, env: dict[str, str]) -> None:
        from tests.support.kafka import create_topic

        self.topic = create_topic(os.environ["KAFKA_BOOTSTRAP_SERVERS"], partitions=3, prefix="bench")
        self.env = {**os.environ, **env}
        self.children: list[subprocess.Popen] = []

    def start(self) -> None:
        for name in ("b1", "b2"):
            self._spawn(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "-c",
                    "2",
                    "-n",
                    f"{name}@%h",
                    "-Q",
                    "pipeline,webhooks,whatsapp",
                    "--without-gossip",
                    "--without-mingle",
                    "-l",
                    "WARNING",
                ]
            )
        self._spawn(
            [sys.executable, "manage.py", "ingest_kafka", "--topic", self.topic, "--group-id", f"g-{self.topic}"]
        )
        time.sleep(8)  # workers ready and the consumer group joined (Tansu takes about 3 s)

    def _spawn(self, argv: list[str]) -> None:
        self.children.append(
            subprocess.Popen(
                argv,
                cwd=ROOT,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)


def wait_processed(prefix: str, count: int, timeout: float = 900) -> float:
    from whatsapp.models import ProcessedMessage

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if ProcessedMessage.objects.filter(processing_id__startswith=prefix, status="PROCESSED").count() >= count:
            return time.monotonic() - started
        time.sleep(0.2)
    raise SystemExit(f"bench: {prefix} did not finish within {timeout}s")


def run_throughput(env: dict[str, str], messages: int) -> float:
    reset_data()
    stack = Stack(env)
    try:
        stack.start()
        prefix = f"t{uuid.uuid4().hex[:6]}"
        started = time.monotonic()
        produce(stack.topic, events(prefix, messages))
        wait_processed(prefix, messages)
        return messages / (time.monotonic() - started)
    finally:
        stack.stop()


def run_fairness(env: dict[str, str], flood: int) -> float:
    reset_data()
    stack = Stack({"BUSINESS_RATE_PER_SECOND": "2", "BUSINESS_RATE_BURST": "100", **env})
    try:
        stack.start()
        produce(stack.topic, events(f"f{uuid.uuid4().hex[:6]}", flood))
        quiet = f"q{uuid.uuid4().hex[:6]}"
        started = time.monotonic()
        produce(stack.topic, events(quiet, 50, business="corner-shop", tenant="tenant-corner"))
        wait_processed(quiet, 50)
        return time.monotonic() - started
    finally:
        stack.stop()


def compare(label: str, unit: str, variants: dict[str, dict[str, str]], run, rounds: int) -> None:
    results: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(rounds):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for name in order:
            value = run(variants[name])
            results[name].append(value)
            print(f"  {label} round {round_ + 1}, {name}: {value:.2f} {unit}", flush=True)
    baseline, candidate = (statistics.median(values) for values in results.values())
    names = list(variants)
    print(
        f"{label}: {names[1]} {candidate:.2f} {unit} vs {names[0]} {baseline:.2f} {unit} "
        f"(ratio {candidate / baseline:.2f}, medians of {rounds})",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages per throughput run")
    parser.add_argument("--flood", type=int, default=3000, help="messages of the flooding business")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant, alternating")
    parser.add_argument("--only", choices=["throughput", "fairness"], help="run one of the two comparisons")
    args = parser.parse_args()
    started = prepare()
    try:
        if args.only in (None, "throughput"):
            compare(
                "throughput",
                "msg/s",
                {"connection per task": {"DATABASE_CONN_MAX_AGE": "0"}, "default": {}},
                lambda env: run_throughput(env, args.messages),
                args.rounds,
            )
        if args.only in (None, "fairness"):
            compare(
                "quiet business behind a flood",
                "s",
                {"one FIFO lane": {"BUSINESS_RATE_BURST": "100000000"}, "per-business lanes": {}},
                lambda env: run_fairness(env, args.flood),
                args.rounds,
            )
    finally:
        for service in reversed(started):
            service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
