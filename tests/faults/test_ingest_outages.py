"""Ingest under faults, against a real broker, Postgres and Redis and the real
`ingest_kafka` command: a SIGKILL after hand-off, a Postgres outage and a Redis
outage. Offsets are committed only for what was handed off, so nothing is lost
and nothing is done twice."""

from __future__ import annotations

import json
import signal

import pytest

from dlq.models import DeadLetter
from leads.models import Order, Product
from tests.support import kafka
from tests.support.ingest import committed_total, queued, valid_records
from tests.support.processes import wait_until
from tests.support.proxy import FaultProxy
from whatsapp.models import DuplicateDelivery, ProcessedMessage

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.slow
def test_sigkill_after_handoff_before_commit_loses_and_doubles_nothing(
    business, topic, bootstrap, start_ingest, start_worker, redis_client
):
    kafka.produce(bootstrap, topic, valid_records(300))
    group = "ingest-killed"
    first = start_ingest(topic, "--batch-size", "100", group=group, env={"INGEST_DEBUG_COMMIT_DELAY_SECONDS": "120"})
    wait_until(
        lambda: ProcessedMessage.objects.count() > 0 and queued(redis_client) > 0,
        timeout=90,
        message="the first batch stored and enqueued",
    )
    # Each customer's first message of the batch is handed on; the rest wait their turn
    # (whatsapp.pipeline.turns) and are started by the message before them.
    stored = wait_until(
        lambda: (
            ProcessedMessage.objects.filter(status="RECEIVED").count() == queued(redis_client)
            and ProcessedMessage.objects.count()
        ),
        timeout=30,
        message="the handoff to finish",
    )
    assert committed_total(bootstrap, topic, group) == 0
    first.kill(signal.SIGKILL)
    first.wait(10)

    second = start_ingest(topic, "--idle-exit", "5", group=group)
    assert second.wait(180) == 0, second.output()[-3000:]
    assert f"{300 - stored} new, {stored} re-read, 0 duplicates" in second.output()
    assert ProcessedMessage.objects.count() == 300
    assert set(ProcessedMessage.objects.values_list("processing_id", flat=True)) == {f"p-{i:05d}" for i in range(300)}
    assert DuplicateDelivery.objects.count() == 0
    assert kafka.committed_offsets(bootstrap, topic, group) == kafka.end_offsets(bootstrap, topic)

    # The re-read rows were enqueued again; a real worker runs each message once.
    Product.objects.filter(sku="SD-01").update(stock=10_000)
    start_worker()
    wait_until(
        lambda: ProcessedMessage.objects.filter(status="PROCESSED").count() == 300,
        timeout=300,
        message="all messages processed",
    )
    assert ProcessedMessage.objects.exclude(attempts=1).count() == 0
    assert Order.objects.count() == 300


def test_database_outage_pauses_ingest_without_committing(business, topic, bootstrap, start_ingest, child_env):
    from django.db import connection

    db = connection.settings_dict
    proxy = FaultProxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432))
    try:
        url = child_env["DATABASE_URL"].replace(f":{db['PORT'] or 5432}/", f":{proxy.port}/")
        group = "ingest-db-outage"
        kafka.produce(bootstrap, topic, valid_records(100, prefix="a"))
        proc = start_ingest(
            topic, "--batch-size", "50", group=group, env={"DATABASE_URL": url, "INGEST_MAX_BACKOFF_SECONDS": "2"}
        )
        wait_until(lambda: committed_total(bootstrap, topic, group) == 100, timeout=90, message="first 100 committed")

        proxy.cut()
        kafka.produce(bootstrap, topic, valid_records(100, prefix="b"))
        wait_until(lambda: "partitions paused" in proc.output(), timeout=30, message="ingest to notice the outage")
        wait_until(lambda: proc.output().count("retrying in") >= 3, timeout=30, message="several retries")
        assert proc.alive()
        assert committed_total(bootstrap, topic, group) == 100
        assert ProcessedMessage.objects.count() == 100

        proxy.restore()
        wait_until(lambda: committed_total(bootstrap, topic, group) == 200, timeout=60, message="catch-up")
        assert ProcessedMessage.objects.count() == 200
        assert "resumed" in proc.output()
        proc.kill(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert kafka.committed_offsets(bootstrap, topic, group) == kafka.end_offsets(bootstrap, topic)
    finally:
        proxy.close()


def test_broker_outage_pauses_ingest_without_committing(
    business, topic, bootstrap, start_ingest, child_env, redis_client
):
    """A batch's chains go to Redis in one call; when it fails on the connection, that is an
    outage like the database's: nothing committed, nothing dead-lettered, the batch retried."""
    from urllib.parse import urlsplit

    broker = urlsplit(child_env["REDIS_URL"])
    proxy = FaultProxy(broker.hostname or "127.0.0.1", broker.port or 6379)
    try:
        url = child_env["REDIS_URL"].replace(f":{broker.port or 6379}/", f":{proxy.port}/")
        group = "ingest-broker-outage"
        # A customer each, so every message is handed to the broker as it is taken in.
        kafka.produce(bootstrap, topic, valid_records(100, prefix="a", customers=100))
        proc = start_ingest(
            topic, "--batch-size", "50", group=group, env={"CELERY_BROKER_URL": url, "INGEST_MAX_BACKOFF_SECONDS": "2"}
        )
        wait_until(lambda: committed_total(bootstrap, topic, group) == 100, timeout=90, message="first 100 committed")

        proxy.cut()
        kafka.produce(bootstrap, topic, valid_records(100, prefix="b", customers=100))
        wait_until(lambda: "partitions paused" in proc.output(), timeout=60, message="ingest to notice the outage")
        wait_until(lambda: proc.output().count("retrying in") >= 3, timeout=60, message="several retries")
        assert proc.alive()
        assert committed_total(bootstrap, topic, group) == 100
        assert not DeadLetter.objects.exists()

        proxy.restore()
        wait_until(lambda: committed_total(bootstrap, topic, group) == 200, timeout=90, message="catch-up")
        assert ProcessedMessage.objects.count() == 200 and not DeadLetter.objects.exists()
        sent = {
            json.loads(m)["headers"]["id"]
            for key in redis_client.keys("pipeline*")
            for m in redis_client.lrange(key, 0, -1)
        }
        assert sent == {f"{p}-{i:05d}:1:dedupe" for p in "ab" for i in range(100)}
        proc.kill(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proxy.close()
