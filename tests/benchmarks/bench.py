"""`make bench`: the pipeline's speed, measured against bare Celery in the same run.

    .venv/bin/python -m tests.benchmarks.bench [--messages 5000] [--workers 2] [--concurrency 2]

One run, phase after phase on the same services, so a noisy machine slows all
of them alike and the ratios stay meaningful:

1. pipeline at full load: N records (40% orders, 20% pricing, 10% each other
   intent; 2% of the records are duplicates, 1% invalid) produced at once to
   real ingest and W worker processes; messages/s from the first record
   produced to the last one accounted for (processed, duplicate or dead
   letter), latency from each record's Kafka timestamp to its inbox row's
   finish, SQL statements per message (pg_stat_statements, BEGIN/COMMIT
   included) and Redis commands per message (INFO commandstats);
2. latency at a steady rate of half the maximum just measured;
3. ingest alone: records/s taken in and handed to the broker, workers stopped;
4. the baseline: bare Celery chains of no-op tasks (tests/benchmarks/noop.py),
   as long as the pipeline's median chain, on the same Redis, with the same
   worker settings and processes; and the ratio pipeline / baseline.

Peak RSS of each process is sampled throughout; the growth of each long-lived
process from 10% of the first phase to its end shows leaks over long runs
(--messages 20000).

Kafka is found or started as `make demo` does. Postgres and Redis are servers
of the benchmark's own (under var/bench-services), so the counts are its own:
Postgres preloads pg_stat_statements, which needs a server start. The
benchmark's own queries run as another role and are not counted.

It prints one table and writes the same figures as JSON to
var/bench/<UTC time>-<git rev>.json. It exits 1 if any record is unaccounted for.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devtools import ROOT, VAR
from devtools.services import create_database, ensure_services, start_postgres, start_redis
from devtools.standin import StandInCloudApi
from devtools.urls import with_path

BENCH_DB = "whatsapp_bench"
OBSERVER = "bench_observer"  # the benchmark's own queries run as this role and are not counted
PHONE_NUMBER_ID = "106540352242922"
# Per 100 valid records: the mix the issue names.
MIX = (
    ["ORDER_REQUEST"] * 40
    + ["PRICING_INQUIRY"] * 20
    + ["COMPLAINT"] * 10
    + ["AVAILABILITY_INQUIRY"] * 10
    + ["SCHEDULE_CALL"] * 10
    + ["UNKNOWN"] * 10
)
QUEUES = "pipeline,webhooks,whatsapp"
PHASES = ("pipeline", "steady", "ingest", "baseline")
TARGETS = {"ratio": 0.60, "sql_per_message": 15, "ingest_records_per_s": 3000, "steady_p99_ms": 100, "rss_growth": 0.20}


# --- services ---------------------------------------------------------------------------------
def start_services() -> tuple[dict[str, str], list]:
    base = VAR / "bench-services"
    postgres = start_postgres(
        base / "postgres",
        options={
            "shared_preload_libraries": "pg_stat_statements",
            # what clients send, not what triggers run
            "pg_stat_statements.track": "top",
            "pg_stat_statements.track_utility": "on",
            "max_connections": "200",
        },
    )
    started = [postgres]
    try:
        redis_server = start_redis(base / "redis")
        started.append(redis_server)
        env = {**os.environ, "DATABASE_URL": postgres.url, "REDIS_URL": redis_server.url}
        urls, more = ensure_services(base, env)
        started += more
    except BaseException:
        for service in reversed(started):
            service.stop()
        raise
    return {
        "postgres": postgres.url,
        "redis": redis_server.url,
        "kafka": urls["KAFKA_BOOTSTRAP_SERVERS"],
        "pids": {"postgres": postgres.pid, "redis": redis_server.pid, **({"kafka": more[0].pid} if more else {})},
    }, started


def prepare_database(server_url: str) -> tuple[str, str]:
    """A fresh database; returns (URL the pipeline uses, URL the benchmark observes with)."""
    import psycopg

    pipeline_url = with_path(server_url, f"/{BENCH_DB}")
    create_database(pipeline_url, replace=True)
    with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [OBSERVER]).fetchone():
            conn.execute(f'CREATE ROLE "{OBSERVER}" LOGIN SUPERUSER')
    observer_url = pipeline_url.replace("postgres://postgres@", f"postgres://{OBSERVER}@")
    with psycopg.connect(pipeline_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return pipeline_url, observer_url


# --- records ----------------------------------------------------------------------------------
def records(prefix: str, count: int, *, duplicates: float = 0.02, invalid: float = 0.01) -> tuple[list, int]:
    """`count` records: valid ones in the mix, then duplicates of some of them and invalid
    ones, shuffled in deterministically. Returns (records, number of valid unique messages)."""
    n_dup, n_bad = round(count * duplicates), round(count * invalid)
    valid = [event(prefix, i) for i in range(count - n_dup - n_bad)]
    out = [(e["lead_id"].encode(), json.dumps(e).encode()) for e in valid]
    dups = [out[(i * 37) % len(out)] for i in range(n_dup)]
    bad = [(None, json.dumps({**event(prefix, 10_000_000 + i), "confidence": 1.5}).encode()) for i in range(n_bad)]
    for i, record in enumerate(dups + bad):
        out.insert((i * 53 + 11) % (len(out) + 1), record)
    return out, len(valid)


def event(prefix: str, i: int, *, received_at: str | None = None) -> dict:
    intent = MIX[i % len(MIX)]
    entities: dict[str, Any] = {}
    if intent == "ORDER_REQUEST":
        entities = {"products": [{"sku": "SD-01", "name": "sourdough loaf", "quantity": 1}]}
    elif intent == "PRICING_INQUIRY":
        entities = {"products": [{"sku": "CR-02", "name": "croissant"}]}
    elif intent == "AVAILABILITY_INQUIRY":
        entities = {"products": [{"sku": "BG-03", "name": "baguette"}]}
    elif intent == "COMPLAINT":
        entities = {"severity": "medium"}
    elif intent == "SCHEDULE_CALL":
        call = (datetime.now(UTC) + timedelta(days=3)).replace(hour=15, minute=0, second=0, microsecond=0)
        entities = {"preferred_time": call.isoformat()}
    return {
        "schema_version": 1,
        "processing_id": f"{prefix}-{i:07d}",
        "lead_id": f"{prefix}-lead-{i % 211}",
        "business_id": "acme-bakery",
        "tenant_id": "tenant-acme",
        "message_id": f"wamid.{prefix}{i}",
        "customer": {"wa_id": f"1555{i % 1_000_000:07d}", "name": "Bench Customer"},
        # Now, so every reply falls inside the 24-hour window as it does for live traffic.
        "message": {"text": "bench message", "received_at": received_at or datetime.now(UTC).isoformat()},
        "intent": intent,
        "confidence": 0.95,
        "entities": entities,
        "ai": {"model": "intent-v3", "processing_ms": 100},
    }


def producer(bootstrap: str):
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})


def produce_all(bootstrap: str, topic: str, items: list) -> None:
    p = producer(bootstrap)
    for key, value in items:
        while True:
            try:
                p.produce(topic, key=key, value=value)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    if p.flush(120):
        raise SystemExit("bench: the broker did not take every record")


def produce_steady(bootstrap: str, topic: str, items: list, rate: float) -> None:
    """One record every 1/rate seconds, each sent at once (no batching delay)."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    start = time.monotonic()
    for n, (key, value) in enumerate(items):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        p.produce(topic, key=key, value=value)
        p.poll(0)
    if p.flush(120):
        raise SystemExit("bench: the broker did not take every record")


# --- processes --------------------------------------------------------------------------------
@dataclass
class Child:
    role: str
    process: subprocess.Popen
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Processes:
    env: dict[str, str]
    logs: Path
    children: list[Child] = field(default_factory=list)
    topic: str | None = None  # the topic the running ingest reads
    cpu: CpuMeter | None = None

    def spawn(self, role: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        log_path = self.logs / f"{role}-{len(self.children)}.log"
        log = open(log_path, "wb")
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child = Child(role, process, log_path)
        self.children.append(child)
        return child

    def workers(self, app: str, count: int, concurrency: int, queues: str, pool: str = "prefork") -> list[Child]:
        started = [
            self.spawn(
                "worker",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    app,
                    "worker",
                    "-P",
                    pool,
                    "-c",
                    str(concurrency),
                    "-Q",
                    queues,
                    "-n",
                    f"bench{i}-{uuid.uuid4().hex[:4]}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "-l",
                    "INFO",
                ],
            )
            for i in range(count)
        ]
        wait_for(lambda: all("ready." in w.output() for w in started), 120, "workers ready", started)
        return started

    def ingest(self, topic: str, group: str, env: dict[str, str] | None = None) -> Child:
        child = self.spawn(
            "ingest", [sys.executable, "manage.py", "ingest_kafka", "--topic", topic, "--group-id", group], env=env
        )
        wait_for(lambda: "ingest: assigned" in child.output(), 120, "ingest to join its group", [child])
        return child

    def stop(self, children: list[Child] | None = None) -> None:
        chosen = self.children if children is None else children
        for child in chosen:
            if child.process.poll() is None:
                os.killpg(child.process.pid, signal.SIGTERM)
        for child in chosen:
            try:
                child.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait(10)
        self.children = [c for c in self.children if c not in chosen]


def wait_for(predicate, timeout: float, what: str, children: list[Child] = ()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for child in children:
            if child.process.poll() is not None:
                raise SystemExit(f"bench: {child.role} exited while waiting for {what}; see {child.log_path}")
        time.sleep(0.2)
    raise SystemExit(f"bench: timed out after {timeout:.0f}s waiting for {what}")


class RssSampler:
    """Peak RSS of every process of the benchmark's children (worker pool processes
    included), and each one's RSS when marked early and at the end, for growth."""

    def __init__(self, processes: Processes) -> None:
        self.processes = processes
        self.peak: dict[int, tuple[str, int]] = {}
        self.current: dict[int, tuple[str, int]] = {}
        self.early: dict[int, int] = {}
        self.late: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.5):
            current: dict[int, tuple[str, int]] = {}
            for child in list(self.processes.children):
                try:
                    root = psutil.Process(child.process.pid)
                    members = [(f"{child.role}", root)] + [(f"{child.role}-child", p) for p in root.children(True)]
                    for role, proc in members:
                        current[proc.pid] = (role, proc.memory_info().rss)
                except psutil.Error:
                    continue
            for pid, (role, rss) in current.items():
                if rss > self.peak.get(pid, (role, 0))[1]:
                    self.peak[pid] = (role, rss)
            self.current = current

    def mark_early(self) -> None:
        self.early = {pid: rss for pid, (_, rss) in self.current.items()}

    def mark_late(self) -> None:
        self.late = {pid: rss for pid, (_, rss) in self.current.items()}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def report(self) -> dict:
        by_role: dict[str, int] = {}
        for role, rss in self.peak.values():
            by_role[role] = max(by_role.get(role, 0), rss)
        growth = {pid: (self.late[pid] - rss) / rss for pid, rss in self.early.items() if pid in self.late and rss}
        return {
            "peak_mib_by_role": {r: round(v / 2**20, 1) for r, v in sorted(by_role.items())},
            "max_growth": round(max(growth.values()), 3) if growth else None,
            "processes_tracked_for_growth": len(growth),
        }


class CpuMeter:
    """CPU seconds (user + system) used by each kind of process, children included: the
    benchmark's children by role, and the servers it started. Where the time goes per
    message tells more than throughput on a shared, noisy machine."""

    def __init__(self, processes: Processes, servers: dict[str, int]) -> None:
        self.processes = processes
        self.servers = servers

    def snapshot(self) -> dict[str, float]:
        import psutil

        roots: list[tuple[str, int]] = [(c.role, c.process.pid) for c in self.processes.children]
        roots += list(self.servers.items())
        used: dict[str, float] = {}
        for role, pid in roots:
            try:
                root = psutil.Process(pid)
                for proc in [root, *root.children(recursive=True)]:
                    times = proc.cpu_times()
                    used[role] = used.get(role, 0.0) + times.user + times.system
            except psutil.Error:
                continue
        me = psutil.Process().cpu_times()
        used["bench (stand-in APIs, producer, polling)"] = me.user + me.system
        return used

    @staticmethod
    def per_item(before: dict[str, float], after: dict[str, float], items: int) -> dict[str, float]:
        """Milliseconds of CPU per item, by role."""
        return {role: round((after[role] - before.get(role, 0.0)) * 1000 / max(items, 1), 2) for role in sorted(after)}


# --- reading what happened ----------------------------------------------------------------------
class Observer:
    """The benchmark's view of the database, as a role whose statements are not counted."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)

    def one(self, sql: str, params: list | None = None) -> Any:
        return self.conn.execute(sql, params or []).fetchone()[0]

    def one_or_none(self, sql: str, params: list | None = None) -> Any:
        row = self.conn.execute(sql, params or []).fetchone()
        return row[0] if row is not None else None

    def accounted(self, prefix: str) -> tuple[int, int]:
        """(records accounted for, messages still in flight) of this prefix."""
        like = f"{prefix}-%"
        rows = self.conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status IN ('RECEIVED', 'WAITING', 'PROCESSING')) "
            "FROM whatsapp_processedmessage WHERE processing_id LIKE %s",
            [like],
        ).fetchone()
        dups = self.one("SELECT count(*) FROM whatsapp_duplicatedelivery WHERE processing_id LIKE %s", [like])
        return rows[0] + dups, rows[1]

    def dead_letters_at_ingest(self, topic: str) -> int:
        return self.one("SELECT count(*) FROM dlq_deadletter WHERE stage = 'ingest' AND kafka_topic = %s", [topic])

    def latencies_ms(self, prefix: str) -> list[float]:
        rows = self.conn.execute(
            "SELECT extract(epoch FROM finished_at - kafka_timestamp) * 1000 FROM whatsapp_processedmessage "
            "WHERE processing_id LIKE %s AND status = 'PROCESSED' AND kafka_timestamp IS NOT NULL",
            [f"{prefix}-%"],
        ).fetchall()
        return sorted(float(r[0]) for r in rows)

    def finished(self, prefix: str) -> int:
        return self.one(
            "SELECT count(*) FROM whatsapp_processedmessage WHERE processing_id LIKE %s "
            "AND status IN ('PROCESSED', 'FAILED')",
            [f"{prefix}-%"],
        )

    def median_chain_length(self, prefix: str) -> int:
        """dedupe, intent, one task per action, then the tail (mark read, reply, finish)."""
        rows = self.conn.execute(
            "SELECT count(s.id) FROM whatsapp_processedmessage m LEFT JOIN whatsapp_sagastep s "
            "ON s.message_id = m.id AND s.saga_run = m.saga_run WHERE m.processing_id LIKE %s GROUP BY m.id",
            [f"{prefix}-%"],
        ).fetchall()
        return 3 + int(statistics.median(r[0] for r in rows)) if rows else 3

    def reset_statements(self) -> None:
        self.conn.execute("SELECT pg_stat_statements_reset()")

    def statements(self) -> tuple[int, list[tuple[int, str]]]:
        """Statements the pipeline's role ran in the benchmark database since the reset."""
        # Foreign-key checks run by the server at commit (Django's constraints are deferred)
        # show up as top-level statements; no client sent them.
        where = (
            "dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND userid <> (SELECT oid FROM pg_roles WHERE rolname = current_user) "
            "AND query NOT LIKE '%%FOR KEY SHARE OF x%%'"
        )
        total = self.one(f"SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE {where}")
        top = self.conn.execute(
            f"SELECT calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 160) "
            f"FROM pg_stat_statements WHERE {where} ORDER BY calls DESC LIMIT 25"
        ).fetchall()
        return int(total), [(int(c), q) for c, q in top]


def redis_commands(client) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in client.info("commandstats").items()}


def queued_tasks(client, queue: str = "pipeline") -> int:
    """Tasks waiting in a queue: kombu's Redis transport keeps one list per priority step."""
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    with client.pipeline(transaction=False) as pipe:
        for step in PRIORITY_STEPS:
            pipe.llen(f"{queue}{Channel.sep}{step}" if step else queue)
        return sum(pipe.execute())


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "count": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "count": len(ordered)}


# --- the phases ---------------------------------------------------------------------------------
def load_business(outside: str) -> None:
    from leads.models import Business, Product

    biz = Business.objects.create(
        business_id="acme-bakery",
        tenant_id="tenant-acme",
        display_name="Acme Bakery",
        phone_number_id=PHONE_NUMBER_ID,
        replies_enabled=True,
        sales_webhook_url=f"{outside}/crm/acme",
        sales_webhook_secret="bench-secret",
    )
    for sku, name, price in [
        ("SD-01", "sourdough loaf", "6.50"),
        ("CR-02", "croissant", "2.20"),
        ("BG-03", "baguette", "3.10"),
    ]:
        Product.objects.create(business=biz, sku=sku, name=name, price=price, stock=100_000_000)


def new_topic(bootstrap: str, partitions: int) -> str:
    from tests.support.kafka import create_topic

    return create_topic(bootstrap, partitions=partitions, prefix="bench")


def run(args: argparse.Namespace) -> dict:
    import redis as redis_lib

    load_at_start = os.getloadavg()
    urls, services = start_services()
    # One request at a time, no thread per connection: the stand-in for Meta and the CRM
    # shares the machine, and should cost the measurement as little as it can.
    outside = StandInCloudApi(threaded=False).start()
    outside_url = outside.url
    logs = VAR / "bench" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    processes: Processes | None = None
    sampler: RssSampler | None = None
    try:
        pipeline_url, observer_url = prepare_database(urls["postgres"])
        redis_url = urls["redis"]
        env = {
            "DATABASE_URL": pipeline_url,
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url,
            "CELERY_RESULT_BACKEND": redis_url,
            "KAFKA_BOOTSTRAP_SERVERS": urls["kafka"],
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "SECRET_KEY": secrets.token_urlsafe(50),
            # Production's defaults: INFO, JSON lines.
            "LOG_LEVEL": "INFO",
            "INGEST_METRICS_PORT": "0",
            "WHATSAPP_GRAPH_BASE_URL": outside_url,
            "WHATSAPP_ACCESS_TOKEN": "bench-token",
            # The stand-in CRM is local and plain http.
            "SALES_WEBHOOK_ALLOW_HTTP": "1",
            "SALES_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        }
        os.environ.update(env)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        load_business(outside_url)
        observer = Observer(observer_url)
        broker = redis_lib.Redis.from_url(redis_url)
        processes = Processes(dict(os.environ), logs)
        processes.cpu = CpuMeter(processes, urls["pids"])
        sampler = RssSampler(processes)
        sampler.start()

        phases = args.only
        chain_length, finished, valid = args.chain_length, args.messages, args.messages

        # 1. the pipeline at full load
        if "pipeline" in phases:
            chain_length, finished, valid = pipeline_phase(args, urls, observer, broker, processes, sampler, result)
        if "steady" in phases:
            steady_phase(args, urls, observer, processes, result)
        processes.stop()
        if "ingest" in phases:
            ingest_phase(args, urls, observer, broker, processes, result)
        if "baseline" in phases:
            baseline_phase(args, broker, processes, result, chains=finished or valid, chain_length=chain_length)
        if "pipeline" in result and "baseline" in result:
            result["ratio"] = round(result["pipeline"]["messages_per_s"] / result["baseline"]["chains_per_s"], 3)
    finally:
        if sampler is not None:
            sampler.stop()
            result["rss"] = sampler.report()
        if processes is not None:
            processes.stop()
        outside.stop()
        for service in reversed(services):
            service.stop()
    result["machine"] = {"cores": os.cpu_count(), "loadavg_at_start": [round(x, 2) for x in load_at_start]}
    return result


def pipeline_phase(args, urls, observer, broker, processes, sampler, result) -> tuple[int, int, int]:
    """The pipeline at full load; returns (median chain length, messages finished, valid messages)."""
    topic = new_topic(urls["kafka"], args.partitions)
    processes.workers("config", args.workers, args.concurrency, QUEUES, args.pool)
    processes.ingest(topic, f"bench-{topic}")
    prefix = f"p{uuid.uuid4().hex[:6]}"
    items, valid = records(prefix, args.messages)
    observer.reset_statements()
    broker.config_resetstat()
    print(f"bench: pipeline, {len(items)} records ({valid} messages) ...", flush=True)
    cpu_before = processes.cpu.snapshot()
    began = time.monotonic()
    produce_all(urls["kafka"], topic, items)
    marked = False
    deadline = began + args.timeout
    while True:
        done, busy = observer.accounted(prefix)
        done += observer.dead_letters_at_ingest(topic)
        if not marked and done >= len(items) * 0.10:
            sampler.mark_early()
            marked = True
        if done >= len(items) and busy == 0:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    elapsed = time.monotonic() - began
    cpu_after = processes.cpu.snapshot()
    sampler.mark_late()
    statements, top_statements = observer.statements()
    commands = redis_commands(broker)
    finished = observer.finished(prefix)
    unaccounted = len(items) - done
    chain_length = observer.median_chain_length(prefix)
    result["pipeline"] = {
        "records": len(items),
        "messages": valid,
        "finished": finished,
        "unaccounted": unaccounted,
        "seconds": round(elapsed, 2),
        "messages_per_s": round(finished / elapsed, 2),
        "latency_ms_full_load": percentiles(observer.latencies_ms(prefix)),
        "median_chain_length": chain_length,
        "cpu_ms_per_message": CpuMeter.per_item(cpu_before, cpu_after, finished),
        "sql_statements": statements,
        "sql_per_message": round(statements / max(finished, 1), 2),
        "sql_top": top_statements,
        "redis_commands": sum(commands.values()),
        "redis_per_message": round(sum(commands.values()) / max(finished, 1), 2),
        # Every task sent, retries and read receipts included, is one LPUSH by kombu's Redis transport.
        "tasks_per_message": round(commands.get("lpush", 0) / max(finished, 1), 2),
        "redis_by_command": dict(sorted(commands.items(), key=lambda kv: -kv[1])),
    }
    print(f"bench:     {result['pipeline']['messages_per_s']} messages/s", flush=True)
    processes.topic = topic
    return chain_length, finished, valid


def steady_phase(args, urls, observer, processes, result) -> None:
    """Latency at half the maximum rate, on the pipeline's processes (or new ones)."""
    rate = args.steady_rate or max(1.0, result.get("pipeline", {}).get("messages_per_s", 2.0) / 2)
    if not any(c.role == "worker" for c in processes.children):
        processes.workers("config", args.workers, args.concurrency, QUEUES, args.pool)
    processes.stop([c for c in processes.children if c.role == "ingest"])
    # An ingest of its own whose fetches Tansu holds at most 10 ms: Apache Kafka answers a
    # fetch as soon as a record arrives, Tansu holds it for the whole wait (100 ms by
    # default), which would measure the embedded broker rather than the pipeline.
    topic = new_topic(urls["kafka"], args.partitions)
    processes.ingest(topic, f"bench-{topic}", env={"KAFKA_FETCH_WAIT_MAX_MS": "10"})
    running = list(processes.children)
    steady_prefix = f"s{uuid.uuid4().hex[:6]}"
    count = max(20, int(rate * args.steady_seconds))
    steady = [(e["lead_id"].encode(), json.dumps(e).encode()) for e in (event(steady_prefix, i) for i in range(count))]
    print(f"bench: steady {rate:.1f} messages/s for {count} messages ...", flush=True)
    produce_steady(urls["kafka"], topic, steady, rate)
    wait_for(lambda: observer.finished(steady_prefix) >= count, args.timeout, "the steady phase to finish", running)
    result["steady"] = {
        "rate_per_s": round(rate, 2),
        "messages": count,
        "latency_ms": percentiles(observer.latencies_ms(steady_prefix)),
    }


def ingest_phase(args, urls, observer, broker, processes, result) -> None:
    """Ingest alone, workers stopped: records/s taken in and handed to the broker."""
    broker.flushdb()
    ingest_topic = new_topic(urls["kafka"], args.partitions)
    ingest_prefix = f"i{uuid.uuid4().hex[:6]}"
    alone = [
        (e["lead_id"].encode(), json.dumps(e).encode())
        for e in (event(ingest_prefix, i) for i in range(args.ingest_records))
    ]
    produce_all(urls["kafka"], ingest_topic, alone)
    print(f"bench: ingest alone, {len(alone)} records ...", flush=True)
    lone = processes.ingest(ingest_topic, f"bench-{ingest_topic}")
    deadline = time.monotonic() + args.timeout
    # Every record in the inbox, and the chain of every message not waiting behind its
    # customer's earlier one (whatsapp.pipeline.turns) handed to the broker.
    ready = (
        "SELECT count(*) FILTER (WHERE status <> 'WAITING') FROM whatsapp_processedmessage "
        "WHERE processing_id LIKE %s HAVING count(*) >= %s"
    )
    while (handed := observer.one_or_none(ready, [f"{ingest_prefix}-%", len(alone)])) is None or queued_tasks(
        broker
    ) < handed:
        if time.monotonic() > deadline or lone.process.poll() is not None:
            raise SystemExit(f"bench: ingest did not hand off every record; see {lone.log_path}")
        time.sleep(0.02)
    handed_off = time.time()
    if observer.accounted(ingest_prefix)[0] < len(alone):
        raise SystemExit("bench: ingest handed off records that are not in the inbox")
    first = observer.one(
        "SELECT extract(epoch FROM min(received_at)) FROM whatsapp_processedmessage WHERE processing_id LIKE %s",
        [f"{ingest_prefix}-%"],
    )
    span = max(handed_off - float(first), 1e-3)
    result["ingest_alone"] = {
        "records": len(alone),
        "seconds": round(span, 3),
        "records_per_s": round(len(alone) / span, 1),
    }
    processes.stop([lone])
    broker.flushdb()


def baseline_phase(args, broker, processes, result, *, chains: int, chain_length: int) -> None:
    """Bare Celery: chains of no-op tasks as long as the pipeline's median chain."""
    from tests.benchmarks import noop

    noop_workers = processes.workers("tests.benchmarks.noop", args.workers, args.concurrency, "pipeline", args.pool)
    broker.config_resetstat()
    print(f"bench: bare Celery, {chains} chains of {chain_length} no-op tasks ...", flush=True)
    cpu_before = processes.cpu.snapshot()
    began = time.monotonic()
    with noop.app.producer_or_acquire() as publisher:
        for index in range(chains):
            noop.chain_of(chain_length, index).apply_async(producer=publisher, queue="pipeline")
    wait_for(lambda: int(broker.get(noop.DONE_KEY) or 0) >= chains, args.timeout, "the no-op chains", noop_workers)
    baseline_elapsed = time.monotonic() - began
    cpu_after = processes.cpu.snapshot()
    baseline_commands = sum(redis_commands(broker).values())
    processes.stop(noop_workers)
    result["baseline"] = {
        "chains": chains,
        "chain_length": chain_length,
        "seconds": round(baseline_elapsed, 2),
        "chains_per_s": round(chains / baseline_elapsed, 2),
        "redis_per_chain": round(baseline_commands / chains, 2),
        "cpu_ms_per_chain": CpuMeter.per_item(cpu_before, cpu_after, chains),
    }


# --- output -------------------------------------------------------------------------------------
def git_rev() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return (rev or "unknown") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def table(result: dict) -> str:
    """The figures of the phases that ran, each against its target."""
    rows: list[tuple[str, str, str]] = []
    p, s, b, i = (result.get(k) for k in ("pipeline", "steady", "baseline", "ingest_alone"))
    if p:
        rows.append(
            ("pipeline throughput", f"{p['messages_per_s']} messages/s ({p['finished']} in {p['seconds']} s)", "")
        )
    if b:
        rows.append(("bare Celery baseline", f"{b['chains_per_s']} chains/s of {b['chain_length']} no-op tasks", ""))
    if "ratio" in result:
        rows.append(("pipeline / baseline", f"{result['ratio']:.0%}", f">= {TARGETS['ratio']:.0%}"))
    if p:
        rows.append(("SQL statements / message", f"{p['sql_per_message']}", f"<= {TARGETS['sql_per_message']}"))
        baseline = f" (baseline {b['redis_per_chain']} / chain)" if b else ""
        rows.append(("Redis commands / message", f"{p['redis_per_message']}{baseline}", ""))
        if "tasks_per_message" in p:
            rows.append(("tasks / message", f"{p['tasks_per_message']} (median chain {p['median_chain_length']})", ""))
    if p:
        cpu = p["cpu_ms_per_message"]
        rows.append(
            (
                "CPU ms / message",
                f"{sum(cpu.values()):.1f}: "
                + ", ".join(f"{role.split(' ')[0]} {ms}" for role, ms in cpu.items() if ms >= 0.05),
                "",
            )
        )
    if b:
        cpu = b["cpu_ms_per_chain"]
        rows.append(
            (
                "CPU ms / no-op chain",
                f"{sum(cpu.values()):.1f}: "
                + ", ".join(f"{role.split(' ')[0]} {ms}" for role, ms in cpu.items() if ms >= 0.05),
                "",
            )
        )
    if i:
        rows.append(("ingest alone", f"{i['records_per_s']} records/s", f">= {TARGETS['ingest_records_per_s']}"))
    if p:
        full = p["latency_ms_full_load"]
        rows.append(("latency at full load (ms)", f"p50 {full['p50']}  p95 {full['p95']}  p99 {full['p99']}", ""))
    if s:
        steady = s["latency_ms"]
        rows.append(
            (
                f"latency at {s['rate_per_s']}/s (ms)",
                f"p50 {steady['p50']}  p95 {steady['p95']}  p99 {steady['p99']}",
                f"p99 < {TARGETS['steady_p99_ms']}",
            )
        )
    rss = result.get("rss") or {}
    if rss.get("peak_mib_by_role"):
        rows.append(("peak RSS (MiB)", ", ".join(f"{k} {v}" for k, v in rss["peak_mib_by_role"].items()), ""))
    if p:
        growth = rss.get("max_growth")
        rows.append(
            (
                "RSS growth over the run",
                f"{growth:.1%}" if growth is not None else "n/a",
                f"< {TARGETS['rss_growth']:.0%}",
            )
        )
        rows.append(("unaccounted records", f"{p['unaccounted']}", "0"))
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    lines = [f"{'':<{width}}  {'measured':<{vwidth}}  target", "-" * (width + vwidth + 14)]
    lines += [f"{label:<{width}}  {value:<{vwidth}}  {target}" for label, value, target in rows]
    m = result["machine"]
    lines.append(
        f"{m['cores']} cores, load average at start {m['loadavg_at_start']}; "
        f"{result['settings']['workers']} workers x -c {result['settings']['concurrency']} "
        f"({result['settings'].get('pool', 'prefork')}), git {result['git_rev']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=5000, help="records produced for the pipeline (default 5000)")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker (default 2)")
    parser.add_argument(
        "--pool",
        default="prefork",
        choices=["prefork", "threads", "solo"],
        help="Celery worker pool, for the pipeline and the baseline alike (default prefork)",
    )
    parser.add_argument("--partitions", type=int, default=3, help="partitions of the bench topics (default 3)")
    parser.add_argument("--steady-seconds", type=float, default=30.0, help="length of the steady-rate phase")
    parser.add_argument(
        "--ingest-records", type=int, default=None, help="records for ingest alone (default --messages)"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up on a phase after this long")
    parser.add_argument(
        "--only",
        type=lambda v: tuple(p.strip() for p in v.split(",")),
        default=PHASES,
        help=f"run only these phases, comma-separated ({','.join(PHASES)})",
    )
    parser.add_argument(
        "--chain-length",
        type=int,
        default=6,
        help="baseline chain length when the pipeline phase does not run (default 6)",
    )
    parser.add_argument(
        "--steady-rate",
        type=float,
        default=None,
        help="messages/s of the steady phase (default: half the pipeline's measured rate)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(PHASES)
    if unknown:
        parser.error(f"--only: unknown phase {', '.join(sorted(unknown))} (phases: {', '.join(PHASES)})")
    args.ingest_records = args.ingest_records or args.messages
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    rev = git_rev()
    result = run(args)
    result.update(git_rev=rev, when=stamp, settings=dict(vars(args).items()))
    out_dir = VAR / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stamp}-{rev}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(result))
    print(f"\nwritten to {path.relative_to(ROOT)}")
    unaccounted = result.get("pipeline", {}).get("unaccounted", 0)
    if unaccounted:
        print(f"bench: {unaccounted} records unaccounted for", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
