"""Fixtures on real services: Postgres, Redis, a Kafka-protocol broker and Celery workers."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis as redis_lib
from django.conf import settings
from django.db import connection

from tests.support import kafka as kafka_support
from tests.support.processes import ManagedProcess

# Fixtures that live in a support module of their own (the breakers' rdb and new_name; the
# webhook's business, secrets, request topic and relay processes).
pytest_plugins = ["tests.support.breakers", "tests.support.loop", "tests.support.statuses", "tests.support.webhook"]

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """The URL of the database this test run uses (pytest-django's test_ copy)."""
    db = connection.settings_dict
    auth = quote(db["USER"] or "postgres")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


# The longest tests, in the order they should start: under pytest-xdist
# (`make test` runs with --maxschedchunk 1) each worker takes the next test as
# it frees up, so starting with the longest keeps one worker from being left
# with them all at the end.
LONGEST_FIRST = [
    "test_pipeline_volume",
    "test_faults",
    "test_ingest_outages",
    "test_pipeline",
    "test_metrics",
    "test_pipeline_breakers",
    "test_fairness",
    "test_demo",
]


def pytest_collection_modifyitems(config, items) -> None:
    def weight(item) -> tuple[int, int]:
        if item.get_closest_marker("slow") is None:
            return (1, 0)
        module = item.module.__name__.rpartition(".")[2]
        return (0, LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST))

    items.sort(key=weight)  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def fresh_breakers():
    """Every test starts with every circuit breaker closed: the local HTTP
    server keeps its port for the whole run, so one test's failures would
    otherwise open the breaker for the next."""
    from core.breakers import all_breakers, reset

    for snapshot in all_breakers():
        reset(snapshot["name"])
    yield


@pytest.fixture
def child_env(transactional_db) -> dict[str, str]:
    """Environment for ingest and worker processes started by a test."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=database_url(),
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="INFO",
        # Tests run in parallel: no ingest may take the fixed metrics port (a test that reads it sets its own).
        INGEST_METRICS_PORT="0",
        # The tests' sales webhooks are local servers (core/clients/destinations.py refuses them otherwise).
        SALES_WEBHOOK_ALLOW_HTTP="1",
        SALES_WEBHOOK_ALLOWED_HOSTS="127.0.0.1,localhost,::1",
    )
    return env


@pytest.fixture
def bootstrap() -> str:
    return settings.KAFKA_BOOTSTRAP_SERVERS


@pytest.fixture
def topic(bootstrap: str) -> str:
    return kafka_support.create_topic(bootstrap, partitions=3)


@pytest.fixture
def redis_client() -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def business(transactional_db):
    from leads.models import Business, Product
    from tests.support.events import BUSINESS_ID, TENANT_ID

    biz = Business.objects.create(business_id=BUSINESS_ID, tenant_id=TENANT_ID, display_name="Acme Bakery")
    Product.objects.create(business=biz, sku="SD-01", name="sourdough loaf", price="6.50", stock=500)
    return biz


@pytest.fixture
def poison_trigger(transactional_db):
    """While the test runs, the inbox refuses the row of tests.support.poison.POISON."""
    from tests.support.poison import add_poison_trigger, remove_poison_trigger

    add_poison_trigger()
    yield
    remove_poison_trigger()


@pytest.fixture
def processes() -> Iterator[list[ManagedProcess]]:
    """Every process a test starts is stopped when it ends, pass or fail."""
    started: list[ManagedProcess] = []
    yield started
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
def start_ingest(child_env, processes):
    def start(topic: str, *args: str, group: str | None = None, env: dict[str, str] | None = None) -> ManagedProcess:
        argv = [
            sys.executable,
            "manage.py",
            "ingest_kafka",
            "--topic",
            topic,
            "--group-id",
            group or f"g-{topic}",
            *args,
        ]
        proc = ManagedProcess("ingest", argv, {**child_env, **(env or {})})
        processes.append(proc)
        return proc

    return start


@pytest.fixture
def start_worker(child_env, processes, redis_client):
    def start(
        concurrency: int = 2,
        queues: str | None = "pipeline,webhooks,whatsapp",
        name: str = "w1",
        env: dict[str, str] | None = None,
        ready_timeout: float = 60,
        extra_args: tuple[str, ...] = (),
    ) -> ManagedProcess:
        """queues None: no -Q, the worker consumes every declared queue (CELERY_TASK_QUEUES)."""
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-P",
            "prefork",
            "-c",
            str(concurrency),
            *(("-Q", queues) if queues else ()),
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
            *extra_args,
        ]
        proc = ManagedProcess(f"worker-{name}", argv, {**child_env, **(env or {})})
        processes.append(proc)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if "ready." in proc.output():
                return proc
            if not proc.alive():
                raise AssertionError(f"worker exited at start:\n{proc.output()[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {ready_timeout}s:\n{proc.output()[-4000:]}")

    return start


class Pipeline:
    """A running ingest process and Celery worker on a fresh topic."""

    def __init__(self, bootstrap: str, topic: str, ingest: ManagedProcess, workers: list[ManagedProcess]) -> None:
        self.bootstrap, self.topic, self.ingest, self.workers = bootstrap, topic, ingest, workers

    def send(self, events: list[dict]) -> None:
        from tests.support.events import encode

        kafka_support.produce(self.bootstrap, self.topic, [(e["lead_id"].encode(), encode(e)) for e in events])

    def wait_settled(self, count: int, timeout: float = 120) -> None:
        """Until `count` inbox rows exist and none is RECEIVED or PROCESSING."""
        from tests.support.processes import wait_until
        from whatsapp.models import ProcessedMessage

        def settled():
            rows = ProcessedMessage.objects
            return rows.count() >= count and not rows.filter(status__in=["RECEIVED", "PROCESSING"]).exists()

        try:
            wait_until(settled, timeout=timeout, interval=0.5, message=f"{count} messages to settle")
        except AssertionError:
            logs = "\n".join(w.output()[-3000:] for w in self.workers)
            raise AssertionError(
                f"messages did not settle; worker logs:\n{logs}\ningest:\n{self.ingest.output()[-2000:]}"
            ) from None


@pytest.fixture
def pipeline(bootstrap, topic, start_ingest, start_worker, business) -> Pipeline:
    worker = start_worker(concurrency=2)
    ingest = start_ingest(topic)
    return Pipeline(bootstrap, topic, ingest, [worker])
