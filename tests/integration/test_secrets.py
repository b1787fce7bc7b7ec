"""No secret of a sales webhook URL in anything we store, serve or log.

A business's webhook URL carries a password (user:s3cret@), a token in its path (T0KEN)
and one in its query (api_key=QSECRET9). A message goes the whole way (Kafka, ingest, a
real Celery worker, NOTIFY_SALES over https to a local receiver that first answers 503,
then 422, compensation, the dead letter), and then none of the three, nor the webhook
secret nor the access token, is found in: any log line of the worker (run at DEBUG) or
of ingest, this test's own log records, /metrics (this process's and the worker's
counts), the breakers' names, the saga steps, the inbox row, the dead letter (error,
traceback, saga state), the notification rows, or the admin pages showing them.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from django.forms.models import model_to_dict
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from core import breakers
from core.metrics import serving as metrics
from dlq.models import DeadLetter
from leads.models import Business, SalesNotification
from tests.support.events import event
from tests.support.processes import wait_until
from whatsapp.models import OutboundMessage, ProcessedMessage, SagaStep

PASSWORD, PATH_TOKEN, QUERY_TOKEN = "s3cret", "T0KEN", "QSECRET9"
WEBHOOK_SECRET = "whsec-never-shown-8c1d"
ACCESS_TOKEN = "EAAG-secrets-test-token-77"
SECRETS = (PASSWORD, PATH_TOKEN, QUERY_TOKEN, WEBHOOK_SECRET, ACCESS_TOKEN)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and localhost, made with the openssl command."""
    openssl = shutil.which("openssl")
    assert openssl, "this test needs the openssl command to make its https receiver's certificate"
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def https_receiver(tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
    server.start()
    yield server, cert
    server.clear()
    if server.is_running():
        server.stop()


def everything_stored() -> str:
    """Every row the pipeline wrote about the message, as text (the business's own URL setting aside)."""
    rows = []
    for model in (ProcessedMessage, SagaStep, DeadLetter, OutboundMessage):
        rows += [model_to_dict(row) for row in model.objects.all()]
    for notification in SalesNotification.objects.all():
        row = model_to_dict(notification)
        row.pop("webhook_url")  # configuration, like the business's own field; the admin shows only its origin
        rows.append(row)
    return json.dumps(rows, default=str)


@pytest.mark.django_db(transaction=True)
def test_no_secret_of_the_webhook_url_is_stored_served_or_logged(
    bootstrap,
    topic,
    start_ingest,
    start_worker,
    business,
    https_receiver,
    tmp_path,
    client,
    caplog,
    django_user_model,
    settings,
):
    caplog.set_level(logging.DEBUG)
    settings.WHATSAPP_ACCESS_TOKEN = ACCESS_TOKEN
    server, cert = https_receiver
    answers = iter([503, 503])
    received = []

    def crm(request: Request) -> Response:
        received.append(request)
        status = next(answers, 422)
        return Response(
            json.dumps({"error": f"refused {PATH_TOKEN} {QUERY_TOKEN}"}), status=status, content_type="application/json"
        )

    server.expect_request(f"/path/{PATH_TOKEN}", method="POST").respond_with_handler(crm)
    url = f"https://user:{PASSWORD}@127.0.0.1:{server.port}/path/{PATH_TOKEN}?api_key={QUERY_TOKEN}"
    # Stored as an older version could have (the form refuses credentials now).
    Business.objects.filter(pk=business.pk).update(sales_webhook_url=url, sales_webhook_secret=WEBHOOK_SECRET)
    prom_dir = tmp_path / "metrics"
    worker = start_worker(
        env={
            "OUTBOUND_CA_BUNDLE": str(cert),
            "LOG_LEVEL": "DEBUG",
            "PROMETHEUS_MULTIPROC_DIR": str(prom_dir),
            "WHATSAPP_ACCESS_TOKEN": ACCESS_TOKEN,
            # Two failures in a row open the receiver's breaker, so its name gets into the transitions metric.
            "BREAKER_CONSECUTIVE_FAILURES": "2",
            "BREAKER_OPEN_SECONDS": "1",
        }
    )
    ingest = start_ingest(topic, env={"LOG_LEVEL": "DEBUG"})
    from tests.support import kafka
    from tests.support.events import encode

    kafka.produce(bootstrap, topic, [(b"lead-123", encode(event("order-secrets")))])
    wait_until(
        lambda: DeadLetter.objects.filter(processing_id="order-secrets").exists(),
        timeout=120,
        message="the message to be dead-lettered",
    )

    # It really went the whole way, with the URL's secrets in the request the receiver got.
    assert len(received) == 3
    assert received[0].authorization.password == PASSWORD
    assert received[0].args["api_key"] == QUERY_TOKEN and received[0].path == f"/path/{PATH_TOKEN}"
    entry = DeadLetter.objects.get(processing_id="order-secrets")
    where = f"https://127.0.0.1:{server.port}"
    assert (entry.stage, entry.reason) == ("NOTIFY_SALES", "non_retryable")
    assert f"sales webhook at {where} answered HTTP 422" in entry.error_message
    assert "Traceback" in entry.traceback
    step = SagaStep.objects.get(message__processing_id="order-secrets", action="NOTIFY_SALES")
    assert (step.status, step.attempts) == ("FAILED", 3)
    name = f"webhook:{where}"
    assert name in [snap["name"] for snap in breakers.all_breakers()]
    wait_until(
        lambda: ProcessedMessage.objects.get(processing_id="order-secrets").status == "FAILED",
        timeout=30,
        message="the inbox row to be marked FAILED",
    )

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(prom_dir))
    workers_metrics = generate_latest(registry).decode()
    assert f'circuit="{name}"' in workers_metrics, "the breaker's transitions were counted by the worker"
    served_metrics = metrics.exposition()[0].decode()
    assert f'circuit="{name}"' in served_metrics

    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "pw"))
    pages = [
        client.get(path).content.decode()
        for path in (
            f"/admin/dlq/deadletter/{entry.pk}/change/",
            f"/admin/whatsapp/processedmessage/{ProcessedMessage.objects.get().pk}/change/",
            "/admin/leads/salesnotification/",
            f"/admin/leads/business/{business.pk}/change/",
            "/admin/whatsapp/circuitbreaker/",
        )
    ]
    assert where in pages[3], "the business page names the webhook's origin"

    # The receiver's own request log (werkzeug, in this process) knows its URL; ours must not.
    our_records = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records if r.name != "werkzeug")
    texts = {
        "worker log": worker.output(),
        "ingest log": ingest.output(),
        "this test's log records": our_records,
        "/metrics": served_metrics,
        "the worker's metrics": workers_metrics,
        "breakers": json.dumps(breakers.all_breakers(), default=str),
        "stored rows": everything_stored(),
        **{f"admin page {i}": page for i, page in enumerate(pages)},
    }
    assert "DEBUG" in texts["worker log"], "the worker logged at DEBUG"
    leaks = [(secret, where_found) for where_found, text in texts.items() for secret in SECRETS if secret in text]
    assert not leaks, leaks
    # Nor the password as it travelled, base64 in the Authorization header.
    basic = base64.b64encode(f"user:{PASSWORD}".encode()).decode()
    assert not [w for w, text in texts.items() if basic in text]


# --- The admin refuses what would leak ------------------------------------------------------------


# --- The redaction helper and the log filter --------------------------------------------------------
