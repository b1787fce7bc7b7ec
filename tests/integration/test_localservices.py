"""The throwaway Postgres/Redis/Kafka servers of devtools/services/.

Each embedded server is started in a tmp dir, a real client is shown to work
against it, and stop() is shown to really stop it. No Django here.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

from devtools import ROOT
from devtools import services as ls


def _port_of(service) -> int:
    return service.port


def _assert_stopped(service) -> None:
    service.stop()
    assert service.process.poll() is not None
    assert not ls.port_open("127.0.0.1", _port_of(service), timeout=0.3)
    service.stop()  # idempotent


def test_services_load_without_django_or_clients():
    """tests/settings.py starts the servers before Django reads its settings, and a
    machine without a server's client package must still start the other servers."""
    probe = (
        "import sys, devtools.services; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'django', 'config', 'whatsapp', 'leads', 'dlq', 'psycopg', 'redis', 'confluent_kafka'}))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr


def test_postgres(tmp_path):
    import psycopg

    with ls.start_postgres(tmp_path / "pg") as pg:
        assert pg.url == f"postgres://postgres@127.0.0.1:{pg.port}/postgres"
        assert ls.postgres_answers(pg.url)
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
            conn.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
            assert conn.execute("SELECT body FROM t ORDER BY id").fetchall() == [("a",), ("b",)]
        _assert_stopped(pg)
    assert not ls.postgres_answers(pg.url)

    # A second start reuses the cluster (no initdb) and keeps the data.
    with ls.start_postgres(tmp_path / "pg") as pg2:
        with psycopg.connect(pg2.url) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)

        # create_database makes a database once; replace=True starts it over, empty.
        demo_url = pg2.url.rsplit("/", 1)[0] + "/demo"
        assert ls.create_database(demo_url)
        with psycopg.connect(demo_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (id int)")
        assert not ls.create_database(demo_url)
        with psycopg.connect(demo_url) as conn:
            assert conn.execute("SELECT to_regclass('kept')").fetchone() == ("kept",)
        held = psycopg.connect(demo_url, autocommit=True)  # a connection left open does not block a replace
        assert ls.create_database(demo_url, replace=True)
        held.close()
        with psycopg.connect(demo_url) as conn:
            assert conn.execute("SELECT to_regclass('kept')").fetchone() == (None,)
    assert not pg2.running()


def test_redis(tmp_path):
    import redis

    with ls.start_redis(tmp_path / "redis") as rs:
        assert rs.url == f"redis://127.0.0.1:{rs.port}/0"
        client = redis.Redis.from_url(rs.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()
        _assert_stopped(rs)
    assert not ls.redis_answers(rs.url)


def test_kafka(tmp_path):
    from confluent_kafka import Consumer, Producer, TopicPartition

    with ls.start_kafka(tmp_path / "kafka") as kafka:
        assert kafka.url == f"127.0.0.1:{kafka.port}"
        assert (tmp_path / "kafka" / "kafka.log").exists()
        topic = f"t-{uuid.uuid4().hex[:8]}"
        assert ls.create_topic({"bootstrap.servers": kafka.url}, topic, 1)
        assert not ls.create_topic({"bootstrap.servers": kafka.url}, topic, 1, exist_ok=True)

        producer = Producer({"bootstrap.servers": kafka.url})
        for i in range(3):
            producer.produce(topic, key=str(i).encode(), value=f"v{i}".encode())
        assert producer.flush(10) == 0

        group = f"g-{uuid.uuid4().hex[:8]}"
        consumer = Consumer(
            {
                "bootstrap.servers": kafka.url,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                # Tansu holds a JoinGroup for about session.timeout.ms / 2
                # (librdkafka's default 45 s -> ~23 s); 6 s makes it ~3 s.
                "session.timeout.ms": 6000,
            }
        )
        consumer.subscribe([topic])
        values = []
        deadline = time.monotonic() + 20
        while len(values) < 3 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            values.append(msg.value())
        assert values == [b"v0", b"v1", b"v2"]
        consumer.commit(asynchronous=False)
        committed = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        assert committed[0].offset == 3
        consumer.close()

        _assert_stopped(kafka)
    assert not ls.kafka_answers(kafka.url, timeout=0.5)


def test_ensure_services_embedded(tmp_path, capsys):
    settings, started = ls.ensure_services(tmp_path / "var", env={"WHATSAPP_EMBEDDED": "1"})
    try:
        assert sorted(s.name for s in started) == ["kafka", "postgres", "redis"]
        assert set(settings) == {"DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS"}
        assert ls.postgres_answers(settings["DATABASE_URL"])
        assert ls.redis_answers(settings["REDIS_URL"])
        assert ls.kafka_answers(settings["KAFKA_BOOTSTRAP_SERVERS"])
        assert ":5432/" not in settings["DATABASE_URL"]
        err = capsys.readouterr().err
        assert "postgres: embedded, started on 127.0.0.1:" in err
        assert "redis: embedded" in err and "kafka: embedded" in err
    finally:
        for service in started:
            service.stop()
    assert not any(s.running() for s in started)
