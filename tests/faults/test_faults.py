"""Faults in the middle of a run: every message still ends processed or
dead-lettered, nothing is done twice, and the sweeper finds nothing stuck.

Each test has FAULT_MESSAGES (1,000 by default) in flight when its fault
strikes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.models import Count, Q
from werkzeug import Response

from devtools.services import start_kafka, start_redis
from dlq.models import DeadLetter
from leads.models import LeadActivity, Order, Product, SalesNotification, SupportTicket
from tests.support import kafka
from tests.support.database import OwnPostgres, use_own_postgres
from tests.support.events import encode, event, later_iso
from tests.support.processes import wait_until
from whatsapp.models import OutboundMessage, ProcessedMessage

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
N = int(os.environ.get("FAULT_MESSAGES", "1000"))

MIX = [
    {"intent": "ORDER_REQUEST"},
    {"intent": "COMPLAINT", "entities": {"severity": "high"}},
    {"intent": "PRICING_INQUIRY"},
    {"intent": "SCHEDULE_CALL", "entities": {"preferred_time": later_iso()}},
    {"intent": "UNKNOWN"},
]


def produce_mix(bootstrap: str, topic: str, first: int = 0, count: int = N, **overrides) -> None:
    records = []
    for i in range(first, first + count):
        lead = f"lead-{i % 41}"
        records.append((lead.encode(), encode(event(f"f-{i:05d}", lead_id=lead, **{**MIX[i % len(MIX)], **overrides}))))
    kafka.produce(bootstrap, topic, records)


def processed() -> int:
    return ProcessedMessage.objects.filter(status="PROCESSED").count()


def sweep(env: dict, stuck_after: float) -> dict:
    out = subprocess.run(
        [sys.executable, "manage.py", "sweep", "--json", "--no-purge", "--stuck-after", str(stuck_after)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def settle_with_sweeper(env: dict, stuck_after: float, timeout: float = 400, supervise=None) -> None:
    """Wait for every message to end, running the sweeper as beat would, and
    `supervise` (restart dead workers, as a process supervisor would)."""
    deadline = time.monotonic() + timeout
    # Sweeping more often than a third of stuck_after finds nothing new, and
    # each sweep is a Django process start: CPU the workers need.
    every = max(3.0, stuck_after / 3)
    swept = time.monotonic()
    while time.monotonic() < deadline:
        if (
            ProcessedMessage.objects.count() == N
            and not ProcessedMessage.objects.filter(status__in=["RECEIVED", "PROCESSING"]).exists()
        ):
            return
        if supervise is not None:
            supervise()
        if time.monotonic() - swept >= every:
            sweep(env, stuck_after)
            swept = time.monotonic()
        time.sleep(1)
    counts = dict(ProcessedMessage.objects.values_list("status").annotate(n=Count("id")))
    left = list(
        ProcessedMessage.objects.filter(status__in=["RECEIVED", "PROCESSING"]).values_list(
            "processing_id", "status", "updated_at"
        )[:5]
    )
    with connection.cursor() as cursor:  # who holds or waits on what, for the next reader of this failure
        cursor.execute(
            "SELECT pid, state, wait_event_type, wait_event, now() - xact_start, left(query, 120) "
            "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND state <> 'idle'"
        )
        activity = cursor.fetchall()
    raise AssertionError(
        f"not settled after {timeout}s: {counts}; left: {left}; "
        f"last sweep: {sweep(env, stuck_after)}; busy connections: {activity}"
    )


def assert_nothing_lost_or_doubled(env: dict, failed_stages: set[str] = frozenset()) -> None:
    """Every message ended; only the stages named may have failed (each
    failure one open, requeueable DLQ entry); no effect happened twice."""
    statuses = dict(ProcessedMessage.objects.values_list("status").annotate(n=Count("id")))
    assert statuses.get("PROCESSED", 0) + statuses.get("FAILED", 0) == N, statuses
    failed = ProcessedMessage.objects.filter(status="FAILED")
    assert set(failed.values_list("failed_stage", flat=True)) <= failed_stages, statuses
    assert DeadLetter.objects.filter(status="OPEN").exclude(stage="ingest").count() == failed.count()
    # A failed reply leaves the actions standing; any other failure undid them.
    acted = ProcessedMessage.objects.filter(Q(status="PROCESSED") | Q(status="FAILED", failed_stage="reply"))
    assert Order.objects.filter(status="CREATED").count() == acted.filter(handler="order").count()
    assert not Order.objects.values("processing_id").annotate(n=Count("id")).filter(n__gt=1).exists()
    assert not SupportTicket.objects.values("processing_id").annotate(n=Count("id")).filter(n__gt=1).exists()
    assert SupportTicket.objects.filter(status="OPEN").count() == acted.filter(intent="COMPLAINT").count()
    # Every plan has at most one sales notification.
    assert not SalesNotification.objects.values("processing_id").annotate(n=Count("id")).filter(n__gt=1).exists()
    # The tail (reply, then finish) acted once per run, however often its task was delivered:
    # one reply row per run, and one "message_processed" activity per processed message.
    assert (
        not OutboundMessage.objects.values("processing_id", "saga_run").annotate(n=Count("id")).filter(n__gt=1).exists()
    )
    finishes = LeadActivity.objects.filter(kind="message_processed")
    assert finishes.count() == statuses.get("PROCESSED", 0)
    assert finishes.values("processing_id").distinct().count() == finishes.count()
    assert sweep(env, stuck_after=0)["stuck"] == 0


@pytest.fixture
def roomy_stock(business):
    Product.objects.filter(sku="SD-01").update(stock=1_000_000)


def test_worker_sigkilled_twice_mid_run(bootstrap, topic, start_ingest, start_worker, roomy_stock, child_env):
    produce_mix(bootstrap, topic)
    first = start_worker(name="a")
    second = start_worker(name="b")
    start_ingest(topic)
    for victim, replacement in ((first, "c"), (second, "d")):
        target = ProcessedMessage.objects.filter(status="PROCESSED").count() + N // 4
        wait_until(
            lambda target=target: ProcessedMessage.objects.filter(status="PROCESSED").count() >= target,
            timeout=300,
            message=f"{target} processed before killing a worker",
        )
        assert processed() < N  # the kill strikes mid-run
        victim.kill(signal.SIGKILL)
        victim.wait(10)
        start_worker(name=replacement)
    settle_with_sweeper(child_env, stuck_after=60)
    assert_nothing_lost_or_doubled(child_env)


def test_redis_restarted_empty_mid_run(bootstrap, topic, start_ingest, start_worker, roomy_stock, child_env, tmp_path):
    redis = start_redis(tmp_path / "redis")
    env = {"REDIS_URL": redis.url, "CELERY_BROKER_URL": redis.url, "CELERY_RESULT_BACKEND": redis.url}
    env_all = {**child_env, **env}
    produce_mix(bootstrap, topic)
    workers = [start_worker(name="a", env=env)]
    start_ingest(topic, env=env)
    wait_until(
        lambda: ProcessedMessage.objects.filter(status="PROCESSED").count() >= N // 3,
        timeout=300,
        message="a third processed",
    )
    import redis as redis_lib

    redis_lib.Redis.from_url(redis.url).flushall()
    assert processed() < N  # the flush strikes mid-run: queued tasks are lost
    port = redis.port
    redis.stop()
    time.sleep(2)
    redis = start_redis(tmp_path / "redis", port=port)

    shutting_down_since: dict[int, float] = {}

    def supervise() -> None:
        # kombu 5.7's worker can die on the lost connection ("Unrecoverable error:
        # AttributeError ... 'hostname'"); in production the process supervisor
        # restarts it, and so does this test. After that error the worker sometimes
        # hangs in its warm shutdown instead of exiting; a supervisor's stop timeout
        # (SIGKILL after a grace period, as systemd's TimeoutStopSec) ends it: 30 s here.
        worker = workers[-1]
        if worker.alive() and "Warm shutdown" in worker.output():
            since = shutting_down_since.setdefault(id(worker), time.monotonic())
            if time.monotonic() - since > 30:
                print(f"worker {len(workers)} hung in its warm shutdown; killing it")
                worker.kill(signal.SIGKILL)
                worker.wait(10)
        if not worker.alive():
            print(f"worker {len(workers)} died on the Redis restart; starting another")
            workers.append(start_worker(name=f"r{len(workers)}", env=env))

    try:
        settle_with_sweeper(env_all, stuck_after=30, timeout=600, supervise=supervise)
        assert_nothing_lost_or_doubled(env_all)
        # One reply row per message, none sent: the test business has no phone number.
        assert OutboundMessage.objects.count() == N
        assert set(OutboundMessage.objects.values_list("status", flat=True)) == {"SKIPPED_DISABLED"}
    finally:
        redis.stop()


@pytest.fixture
def own_postgres(transactional_db, tmp_path):
    """This test's data on a Postgres server of its own, which it can restart."""
    yield from use_own_postgres(tmp_path / "postgres")


def test_postgres_restarted_mid_run(
    own_postgres: OwnPostgres, bootstrap, topic, start_ingest, start_worker, roomy_stock, child_env
):
    assert str(own_postgres.port) in child_env["DATABASE_URL"]
    produce_mix(bootstrap, topic)
    start_worker(name="a")
    start_worker(name="b")
    ingest = start_ingest(topic)
    wait_until(lambda: processed() >= N // 3, timeout=300, message="a third processed")
    assert processed() < N  # the restart strikes mid-run
    own_postgres.restart(down_seconds=10)
    connection.close()  # ours went down with the server
    settle_with_sweeper(child_env, stuck_after=30)
    assert ingest.alive(), ingest.output()[-3000:]
    assert_nothing_lost_or_doubled(child_env)


def test_kafka_broker_restarted_mid_run(topic, start_ingest, start_worker, roomy_stock, child_env, tmp_path):
    """The broker keeps its log in memory, so what it had is gone after the
    restart: ingest must reconnect and take in the records sent afterwards,
    without crashing and without losing what it had already taken in."""
    broker = start_kafka(tmp_path / "kafka")
    port, bootstrap = broker.port, broker.url
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    kafka.create_topic(bootstrap, partitions=3, name=topic)
    half = N // 2
    produce_mix(bootstrap, topic, count=half)
    start_worker(name="a")
    start_worker(name="b")
    ingest = start_ingest(topic, env=env)
    try:
        wait_until(lambda: ProcessedMessage.objects.count() == half, timeout=300, message="the first half taken in")
        assert processed() < half  # the restart comes while they are in flight
        broker.stop()
        time.sleep(3)
        broker = start_kafka(tmp_path / "kafka", port=port)
        kafka.create_topic(bootstrap, partitions=3, name=topic)
        produce_mix(bootstrap, topic, first=half, count=N - half)
        wait_until(
            lambda: ProcessedMessage.objects.count() == N,
            timeout=300,
            interval=1,
            message="the second half taken in after the restart",
        )
        settle_with_sweeper(child_env, stuck_after=60)
        assert ingest.alive(), ingest.output()[-3000:]
        assert_nothing_lost_or_doubled(child_env)
    finally:
        broker.stop()


PHONE_NUMBER_ID = "106540352242922"
OUTAGE_SECONDS = 30.0


class FlakyCloudApi:
    """The Cloud API answering 500 (Meta's error shape) for OUTAGE_SECONDS from
    the first request, then 200; counts successful sends per processing_id."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.first: float | None = None
        self.first_at: datetime | None = None  # wall-clock time of the first 500
        self.failures = 0
        self.sent: Counter[str] = Counter()

    def __call__(self, request) -> Response:
        body = json.loads(request.data)
        with self.lock:
            now = time.monotonic()
            if self.first is None:
                self.first, self.first_at = now, datetime.now(UTC)
            if now - self.first < OUTAGE_SECONDS:
                self.failures += 1
                return Response(
                    json.dumps(
                        {
                            "error": {
                                "message": "An unknown error has occurred.",
                                "type": "OAuthException",
                                "code": 1,
                                "fbtrace_id": "AbC",
                            }
                        }
                    ),
                    status=500,
                    content_type="application/json",
                )
            if body.get("status") == "read":  # a read receipt, best effort: answered, not counted
                return Response('{"success": true}', status=200, content_type="application/json")
            self.sent[body["biz_opaque_callback_data"]] += 1
            wamid = f"wamid.{body['biz_opaque_callback_data']}.{self.sent[body['biz_opaque_callback_data']]}"
        return Response(
            json.dumps(
                {
                    "messaging_product": "whatsapp",
                    "contacts": [{"input": body["to"], "wa_id": body["to"]}],
                    "messages": [{"id": wamid}],
                }
            ),
            status=200,
            content_type="application/json",
        )


def test_whatsapp_answering_500_for_30_seconds(
    bootstrap, topic, start_ingest, start_worker, roomy_stock, business, httpserver, child_env
):
    business.phone_number_id = PHONE_NUMBER_ID
    business.save()
    api = FlakyCloudApi()
    httpserver.expect_request(f"/v21.0/{PHONE_NUMBER_ID}/messages", method="POST").respond_with_handler(api)
    env = {
        "WHATSAPP_GRAPH_BASE_URL": httpserver.url_for("").rstrip("/"),
        "WHATSAPP_ACCESS_TOKEN": "EAAG-fault-token",
        "BREAKER_OPEN_SECONDS": "10",
    }
    received = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    produce_mix(bootstrap, topic, message={"text": "hello", "received_at": received})
    start_worker(name="a", env=env)
    start_worker(name="b", env=env)
    start_ingest(topic)
    settle_with_sweeper({**child_env, **env}, stuck_after=120)

    assert api.failures > 0 and api.first_at is not None
    # The outage struck mid-run: most messages finished after its first 500.
    after = ProcessedMessage.objects.filter(finished_at__gt=api.first_at).count()
    assert after >= N // 2, f"only {after} of {N} messages finished after the outage began"
    assert_nothing_lost_or_doubled(child_env, failed_stages={"reply"})
    # No reply sent twice, and every reply the API accepted is recorded as sent.
    assert not [pid for pid, n in api.sent.items() if n > 1]
    sent_rows = set(OutboundMessage.objects.filter(status="SENT").values_list("processing_id", flat=True))
    assert sent_rows == set(api.sent)
    assert OutboundMessage.objects.count() == N  # one reply row per message
    assert not OutboundMessage.objects.filter(status__in=["SENDING", "PENDING"]).exists()
    # The outage did not sink the run: most replies went out once it ended.
    assert len(sent_rows) >= N * 0.9, f"only {len(sent_rows)} of {N} replies sent"
