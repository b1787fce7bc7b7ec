"""The whole loop on real processes, for the tests that run it: the web process (pytest-django's
live server), the outbox relay, the reference classifier, ingest and a Celery worker on a
real Kafka broker, and a local server answering as the Cloud API does."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque

import pytest
import requests
from werkzeug import Response

from tests.support import meta
from tests.support.processes import ManagedProcess

TOKEN = "EAAG-loop-integration-token"
MESSAGES = f"/v21.0/{meta.PHONE_NUMBER_ID}/messages"
URL = "/webhooks/whatsapp/"


def throttling(code: int, title: str, details: str) -> Response:
    """Meta's throttling answer: HTTP 429 with the Graph error of that code."""
    error = {
        "message": f"({code}) {title}",
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details},
        "fbtrace_id": "AThrottledTrace",
    }
    return Response(json.dumps({"error": error}), status=429, content_type="application/json")


class CloudApi:
    """Answers each text message with a fresh wamid and each read receipt with success, as Meta does.

    With `number_mps`, a message past that many in the last second from the number is answered
    130429; with `pair_interval`, a message to a customer sent less than that many seconds
    after the last one accepted for them is answered 131056 (Meta's codes; the answers are kept
    in `throttled`). Read receipts count towards neither."""

    def __init__(self, number_mps: int | None = None, pair_interval: float | None = None) -> None:
        self.lock = threading.Lock()
        self.texts: list[dict] = []
        self.number_mps, self.pair_interval = number_mps, pair_interval
        self.accepted: deque[float] = deque()
        self.last_to: dict[str, float] = {}
        self.throttled: list[int] = []

    def _throttle(self, to: str) -> Response | None:
        now = time.monotonic()
        if self.number_mps is not None:
            while self.accepted and self.accepted[0] <= now - 1.0:
                self.accepted.popleft()
            if len(self.accepted) >= self.number_mps:
                self.throttled.append(130429)
                return throttling(130429, "Rate limit hit", "Cloud API message throughput has been reached.")
        if self.pair_interval is not None and now - self.last_to.get(to, -1e9) < self.pair_interval:
            self.throttled.append(131056)
            return throttling(
                131056,
                "(Business Account, Consumer Account) pair rate limit hit",
                "Too many messages sent from the sender phone number to the same recipient phone number "
                "in a short period of time.",
            )
        self.accepted.append(now)
        self.last_to[to] = now
        return None

    def __call__(self, request) -> Response:
        body = request.get_json()
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        if body.get("status") == "read":
            return Response('{"success": true}', status=200, content_type="application/json")
        with self.lock:
            refused = self._throttle(str(body.get("to") or body.get("recipient")))
            if refused is not None:
                return refused
            self.texts.append(body)
            wamid = f"wamid.reply.{len(self.texts)}"
        # Meta: a send to a number answers with its wa_id, one to a BSUID (`recipient`) with its user_id.
        contact = (
            {"input": body["to"], "wa_id": body["to"]}
            if "to" in body
            else {"input": body["recipient"], "user_id": body["recipient"]}
        )
        answer = {"messaging_product": "whatsapp", "contacts": [contact], "messages": [{"id": wamid}]}
        return Response(json.dumps(answer), status=200, content_type="application/json")

    def sent_to(self, wa_id: str) -> list[dict]:
        with self.lock:
            return [text for text in self.texts if wa_id in (text.get("to"), text.get("recipient"))]


def post(web: str, delivery: dict) -> int:
    body = meta.encode(delivery)
    return requests.post(web + URL, data=body, headers=meta.signed_headers(body), timeout=10).status_code


@pytest.fixture
def worker_log_level() -> str:
    """A module whose test reads the tasks' arguments in the worker's log overrides this with DEBUG."""
    return "INFO"


@pytest.fixture
def loop(
    live_server,
    webhook_secrets,
    wa_business,
    httpserver,
    bootstrap,
    request_topic,
    topic,
    child_env,
    processes,
    worker_log_level,
) -> tuple[str, CloudApi, list[ManagedProcess]]:
    """Web (the live server), relay, classify, ingest and a worker, wired topic to topic."""
    from leads.models import Product

    Product.objects.create(business=wa_business, sku="CR-02", name="croissant", price="2.20", stock=100)
    wa_business.save()
    api = CloudApi()
    httpserver.expect_request(MESSAGES, method="POST").respond_with_handler(api)
    env = {
        **child_env,
        "WHATSAPP_GRAPH_BASE_URL": httpserver.url_for("").rstrip("/"),
        "WHATSAPP_ACCESS_TOKEN": TOKEN,
        "RELAY_POLL_INTERVAL_SECONDS": "0.2",
    }
    python = sys.executable
    commands = {
        "relay": [python, "manage.py", "relay_outbox", "--topic", request_topic],
        "classify": [
            python,
            "manage.py",
            "classify",
            "--topic",
            request_topic,
            "--result-topic",
            topic,
            "--group-id",
            f"g-{request_topic}",
        ],
        "ingest": [python, "manage.py", "ingest_kafka", "--topic", topic, "--group-id", f"g-{topic}"],
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
            worker_log_level,
        ],
    }
    started = [ManagedProcess(name, argv, env) for name, argv in commands.items()]
    processes.extend(started)
    return live_server.url, api, started


def logs(started: list[ManagedProcess]) -> str:
    return "\n".join(f"--- {p.log_path.name}\n{p.output()[-2500:]}" for p in started)
