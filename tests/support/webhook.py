"""Fixtures for the webhook and the outbox relay: a business on Meta's test number, the
webhook's secrets, a request topic of the test's own, and relay processes."""

from __future__ import annotations

import json
import sys
from collections import Counter

import pytest

from tests.support import kafka as kafka_support
from tests.support import meta
from tests.support.processes import ManagedProcess

WEBHOOK_URL = "/webhooks/whatsapp/"


def post_signed(client, delivery: dict) -> int:
    """A delivery posted through Django's test client as Meta posts it, signed; its status."""
    body = meta.encode(delivery)
    return client.post(
        WEBHOOK_URL, data=body, content_type="application/json", HTTP_X_HUB_SIGNATURE_256=meta.sign(body)
    ).status_code


@pytest.fixture
def wa_business(business):
    """The test business, reachable on Meta's test phone-number id."""
    business.phone_number_id = meta.PHONE_NUMBER_ID
    business.save(update_fields=["phone_number_id"])
    return business


@pytest.fixture
def webhook_secrets(settings) -> None:
    settings.WHATSAPP_APP_SECRET = meta.APP_SECRET
    settings.WHATSAPP_VERIFY_TOKEN = meta.VERIFY_TOKEN


@pytest.fixture
def request_topic(bootstrap: str) -> str:
    return kafka_support.create_topic(bootstrap, partitions=3, prefix="test.ai.request")


@pytest.fixture
def start_relay(child_env, processes):
    def start(topic: str, *args: str, env: dict[str, str] | None = None) -> ManagedProcess:
        argv = [sys.executable, "manage.py", "relay_outbox", "--topic", topic, *args]
        proc = ManagedProcess("relay", argv, {**child_env, "RELAY_POLL_INTERVAL_SECONDS": "0.2", **(env or {})})
        processes.append(proc)
        return proc

    return start


def requests_on(bootstrap: str, topic: str) -> list[dict]:
    """Every request event on the topic, decoded, with its Kafka key as "_key"."""
    return [
        {**json.loads(value or b"{}"), "_key": (key or b"").decode()}
        for key, value in kafka_support.read_all(bootstrap, topic)
    ]


def copies_per_processing_id(events: list[dict]) -> Counter[str]:
    return Counter(event["processing_id"] for event in events)
