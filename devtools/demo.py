"""`make demo`: drive the whole loop, webhook to reply, and show what became of every message.

Starts whatever is missing (Postgres, Redis, a Kafka broker) from pip packages under ./var,
uses a fresh database and fresh topics so the table shows this run only, and runs the service's
real processes: web (gunicorn, the webhook), the outbox relay, the reference classifier, ingest
and a Celery worker, against a local stand-in for the Cloud API and the CRMs
(devtools.standin). It POSTs signed webhook deliveries to web (devtools.loop: texts in English,
Spanish and Portuguese, an image with a caption, a redelivery, a forged signature, then status
webhooks for two replies), and also pushes a pre-labelled result stream straight onto the result
topic (every intent, duplicates, invalid records, a CRM that refuses, an order whose customer's
24-hour window has closed, confirmed with the bakery's approved template, a customer who writes
STOP and then orders: the order is made, no reply goes). It exits 0 only when
every record and every webhook message is accounted for, then stops everything it started.
Run as `python -m devtools.demo`.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from devtools import ROOT, VAR, meta
from devtools.loop import LoopError, LoopReport, WebhookStream, print_rows, problems
from devtools.services import create_database, create_topic, ensure_services
from devtools.standin import StandInCloudApi
from devtools.urls import with_path

# Where the demo keeps this run's data; DEMO_DATABASE and DEMO_REDIS_DB move it (two demos on one
# server at once, as parallel test runs do, must not share them).
DEMO_DB = os.environ.get("DEMO_DATABASE", "whatsapp_demo")
DEMO_REDIS_DB = "/" + os.environ.get("DEMO_REDIS_DB", "12").lstrip("/")


def prepare_environment() -> list:
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))  # a published key is refused
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("INGEST_METRICS_PORT", "0")  # the demo scrapes nothing; leave the port to a real ingest
    urls, started = ensure_services(VAR / "demo-services")
    os.environ["DATABASE_URL"] = with_path(urls["DATABASE_URL"], f"/{DEMO_DB}")
    os.environ["REDIS_URL"] = os.environ["CELERY_BROKER_URL"] = with_path(urls["REDIS_URL"], DEMO_REDIS_DB)
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = urls["KAFKA_BOOTSTRAP_SERVERS"]
    run = int(time.time())
    os.environ["KAFKA_RESULT_TOPIC"] = f"ai.process.result.demo-{run}"
    os.environ["KAFKA_REQUEST_TOPIC"] = f"ai.process.request.demo-{run}"
    os.environ["KAFKA_GROUP_ID"] = f"whatsapp-handler-demo-{run}"
    os.environ["CLASSIFIER_GROUP_ID"] = f"reference-classifier-demo-{run}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    # Replies go to the stand-in Cloud API, never with a real token, whatever the shell holds.
    os.environ["WHATSAPP_ACCESS_TOKEN"] = "demo-token"
    # The webhook's secrets, made up for this run: the demo signs what it POSTs with the app secret.
    os.environ["WHATSAPP_APP_SECRET"] = secrets.token_hex(16)
    os.environ["WHATSAPP_VERIFY_TOKEN"] = secrets.token_urlsafe(16)
    os.environ["RELAY_POLL_INTERVAL_SECONDS"] = "0.2"
    # The stand-in CRM is a local server over plain http, which production refuses.
    os.environ["SALES_WEBHOOK_ALLOW_HTTP"] = "1"
    os.environ["SALES_WEBHOOK_ALLOWED_HOSTS"] = "127.0.0.1,localhost"
    create_database(os.environ["DATABASE_URL"], replace=True)
    return started


def load_businesses(outside: str) -> None:
    """Acme Bakery on Meta's test number with the classifier's sample catalog (its CRM accepts),
    and Corner Cafe, whose CRM refuses everything."""
    from classifier.catalog import install_sample_catalog
    from leads.models import Business, Product

    acme = Business.objects.create(
        business_id="acme-bakery",
        tenant_id="tenant-acme",
        display_name="Acme Bakery",
        phone_number_id=meta.PHONE_NUMBER_ID,
        sales_webhook_url=f"{outside}/crm/acme",
        sales_webhook_secret="demo-secret",
    )
    install_sample_catalog(acme)
    load_templates(acme)
    corner = Business.objects.create(
        business_id="corner-cafe",
        tenant_id="tenant-corner",
        display_name="Corner Cafe",
        sales_webhook_url=f"{outside}/crm/corner",
    )
    Product.objects.create(business=corner, sku="ES-01", name="espresso beans", price="14.00", stock=30)


# The template the bakery's order confirmations go as once a customer's window has closed.
DEMO_TEMPLATE = "order_confirmed"


def load_templates(business: Any) -> None:
    """The bakery's order confirmation as an approved template (as `manage.py templates sync`
    would bring it from Meta), for the sample order whose customer's 24-hour window has closed."""
    from whatsapp.models import MessageTemplate, ReplyTemplate
    from whatsapp.models.templates import ReplyKind

    business.waba_id = meta.WABA_ID
    business.save(update_fields=["waba_id"])
    MessageTemplate.objects.create(
        waba_id=meta.WABA_ID, name=DEMO_TEMPLATE, language="en_US", status="APPROVED", category="UTILITY"
    )
    ReplyTemplate.objects.create(
        business=business,
        kind=ReplyKind.ORDER_CONFIRMED,
        template_name=DEMO_TEMPLATE,
        body_parameters=["customer_name", "order_reference", "total"],
    )


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
    # An order received 25 hours ago (it sat upstream overnight): the window has closed, so its
    # confirmation goes as the bakery's approved template.
    late = (datetime.now(UTC) - timedelta(hours=25)).isoformat()
    events.append(
        ev(
            n + 3,
            "ORDER_REQUEST",
            lead_id="lead-late",
            entities=products,
            message={"text": f"{DEMO_TEXTS['ORDER_REQUEST']} (message {n + 3})", "received_at": late},
        )
    )
    records = [(e["lead_id"].encode(), json.dumps(e).encode()) for e in events]
    records += records[:3]  # the upstream service sent three twice
    records.append(opt_out_record(OPT_OUT_IDS[0]))
    records += [
        (None, b"not json at all"),
        (None, json.dumps(ev(900, "ORDER_REQUEST", confidence=1.5)).encode()),
        (None, json.dumps(ev(901, "PRICING_INQUIRY", business="no-such-shop")).encode()),
        (None, json.dumps(ev(902, "PRICING_INQUIRY", tenant="tenant-other")).encode()),
        (None, json.dumps(ev(903, "PRICING_INQUIRY", schema_version=2)).encode()),
    ]
    return records


# An opt-out: a customer writes STOP (in the stream above), then, once that has run, orders.
# The order is made and no reply goes (the table's "opted out" row).
OPT_OUT_IDS = ("demo-optout-stop", "demo-optout-order")


def opt_out_record(processing_id: str) -> tuple[bytes, bytes]:
    stop = processing_id == OPT_OUT_IDS[0]
    body = {
        "schema_version": 1,
        "processing_id": processing_id,
        "lead_id": "lead-optout",
        "business_id": "acme-bakery",
        "tenant_id": "tenant-acme",
        "message_id": f"wamid.{processing_id}",
        "customer": {"wa_id": "15550109990", "name": "Demo Customer"},
        "message": {
            "text": "STOP" if stop else "2 sourdough loaves please",
            "received_at": datetime.now(UTC).isoformat(),
        },
        "intent": "UNKNOWN" if stop else "ORDER_REQUEST",
        "confidence": 0.4 if stop else 0.95,
        "entities": {} if stop else {"products": [{"sku": "SD-01", "name": "sourdough loaf", "quantity": 2}]},
        "ai": {"model": "intent-v3", "processing_ms": 110},
    }
    return b"lead-optout", json.dumps(body).encode()


def opt_out_outcome() -> tuple[str, str | None]:
    """The table's row for the opt-out, and what is wrong with it (None: as it should be)."""
    from leads.models import Lead, Order
    from whatsapp.models import OutboundMessage

    replies = dict(OutboundMessage.objects.filter(processing_id__in=OPT_OUT_IDS).values_list("processing_id", "status"))
    made = Order.objects.filter(processing_id=OPT_OUT_IDS[1]).count()
    opted = Lead.objects.filter(opted_out_at__isnull=False).count()
    confirmation, order_reply = replies.get(OPT_OUT_IDS[0], "none"), replies.get(OPT_OUT_IDS[1], "none")
    row = f"{opted}  (confirmation {confirmation.lower()}; then an order: {made} made, reply {order_reply.lower()})"
    ok = (opted, confirmation, made, order_reply) == (1, "SENT", 1, "SKIPPED_OPTED_OUT")
    return row, None if ok else f"the opt-out went wrong: {row}"


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


def print_table(sent: int, loop: LoopReport, elapsed: float) -> None:
    from dlq.models import DeadLetter
    from whatsapp.ops.stats import pipeline_stats

    stats = pipeline_stats()
    rows: list[tuple[str, Any]] = [
        (
            "results on the result topic",
            f"{sent + loop.classified}  ({loop.classified} classified, {sent} pre-labelled)",
        ),
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
    rows.append(("  sent as a template", _template_replies()))
    rows.append(("customers opted out (STOP)", opt_out_outcome()[0]))
    width = max(len(r[0]) for r in [*rows, *loop.rows()])
    print()
    print(f"The loop: webhook -> relay -> classify -> ingest -> worker -> Cloud API ({elapsed:.0f}s)")
    print("-" * (width + 40))
    print_rows([(label.ljust(width), value) for label, value in loop.rows()])
    print("-" * (width + 40))
    print_rows([(label.ljust(width), value) for label, value in rows])
    print("-" * (width + 40))
    print(
        "Every webhook message and every record ended as processed, duplicate or dead-lettered;"
        " `python manage.py pipeline_stats --json` has the same counts."
    )


def _template_replies() -> str:
    """The replies that went as a template (the window had closed), with the template's name."""
    from django.db.models import Count

    from whatsapp.models import OutboundMessage

    sent = (
        OutboundMessage.objects.filter(status="SENT")
        .exclude(template_name="")
        .values("template_name", "template_language")
        .annotate(n=Count("id"))
        .order_by("template_name", "template_language")
    )
    names = ", ".join(f"template {t['template_name']} [{t['template_language']}]: {t['n']}" for t in sent)
    return f"{sum(t['n'] for t in sent)}" + (f"  ({names}; the window had closed)" if names else "")


def print_replies(outside: StandInCloudApi, processing_ids: list[str]) -> None:
    """What each webhook customer got back, as the stand-in Cloud API received it (first line)."""
    wanted = set(processing_ids)
    print()
    print("What the webhook's customers were sent (the stand-in Cloud API's log, first lines):")
    for reply in outside.sent():
        if reply.processing_id in wanted:
            print(f"  {reply.to}  {reply.text.splitlines()[0][:90] if reply.text else ''}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_children(env: dict[str, str], logs: Path, web_port: int) -> dict[str, subprocess.Popen]:
    """The service's own processes, each logging to var/demo-logs/<name>.log."""
    python = sys.executable
    commands = {
        "web": [
            python,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{web_port}",
            "--workers",
            "2",
            "--no-control-socket",
        ],
        "relay": [python, "manage.py", "relay_outbox"],
        "classify": [python, "manage.py", "classify"],
        "ingest": [python, "manage.py", "ingest_kafka"],
        "worker": [
            python,
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
    }
    children = {}
    for name, argv in commands.items():
        # The child keeps its own copy of the log's descriptor; ours can close at once.
        with open(logs / f"{name}.log", "wb") as log:
            children[name] = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
    return children


def wait_for_web(url: str, verify_token: str, alive: Any, timeout: float = 60) -> None:
    """Web answers Meta's subscription handshake: it is up and has the verify token."""
    params = {"hub.mode": "subscribe", "hub.verify_token": verify_token, "hub.challenge": "demo-challenge"}
    deadline = time.monotonic() + timeout
    while True:
        alive()
        try:
            answer = requests.get(f"{url}/webhooks/whatsapp/", params=params, timeout=2)
            if answer.status_code == 200 and answer.text == "demo-challenge":
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise LoopError(f"web did not answer the webhook handshake within {timeout:.0f}s")
        time.sleep(0.2)


def main() -> int:
    started = prepare_environment()
    children: dict[str, subprocess.Popen] = {}
    outside = StandInCloudApi().start()
    logs = VAR / "demo-logs"
    logs.mkdir(parents=True, exist_ok=True)

    def alive() -> None:
        for name, child in children.items():
            if child.poll() is not None:
                raise LoopError(f"{name} exited with {child.returncode}; see {logs / (name + '.log')}")

    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        os.environ["WHATSAPP_GRAPH_BASE_URL"] = outside.url
        load_businesses(outside.url)
        kafka = {"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"]}
        create_topic(kafka, os.environ["KAFKA_RESULT_TOPIC"], 3)
        create_topic(kafka, os.environ["KAFKA_REQUEST_TOPIC"], 3)
        web_url = f"http://127.0.0.1:{free_port()}"
        children.update(start_children(dict(os.environ), logs, int(web_url.rsplit(":", 1)[1])))
        begin = time.monotonic()
        records = sample_stream()
        produce(records)
        print(f"demo: sent {len(records)} pre-labelled records to {os.environ['KAFKA_RESULT_TOPIC']}")
        wait_for_web(web_url, os.environ["WHATSAPP_VERIFY_TOKEN"], alive)
        stream = WebhookStream(web_url, os.environ["WHATSAPP_APP_SECRET"], timeout=180, alive=alive)
        print(f"demo: POSTing signed webhook deliveries to {web_url}/webhooks/whatsapp/; waiting for the loop...")
        loop = stream.run()
        expected = len(records) + len(loop.messages)

        def settled() -> bool:
            done, busy = accounted()
            return done >= expected and busy == 0

        stream.wait_for("every pre-labelled record accounted for", settled)
        # The opted-out customer's order, once their STOP has run.
        records.append(opt_out_record(OPT_OUT_IDS[1]))
        produce(records[-1:])
        print("demo: the customer who wrote STOP now orders; waiting for it...")
        expected += 1
        stream.wait_for("the opted-out customer's order accounted for", settled)
        loop = stream.count()
        print_table(len(records), loop, time.monotonic() - begin)
        print_replies(outside, stream.processing_ids())
        wrong = problems(loop)
        if (opt_out_wrong := opt_out_outcome()[1]) is not None:
            wrong.append(opt_out_wrong)
        done, busy = accounted()
        if done != expected or busy:
            wrong.append(f"{done} of {expected} records accounted for, {busy} still in flight")
        if wrong:
            print("demo: FAILED: " + "; ".join(wrong), file=sys.stderr)
            return 1
        return 0
    except LoopError as exc:
        print(f"demo: FAILED: {exc} (logs in {logs})", file=sys.stderr)
        return 1
    finally:
        for child in children.values():
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
        outside.stop()
        for service in reversed(started):
            service.stop()


if __name__ == "__main__":
    sys.exit(main())
