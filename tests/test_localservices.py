"""The throwaway Postgres/Redis/Kafka servers of config/localservices.py.

Each embedded server is started in a tmp dir, a real client is shown to work
against it, and stop() is shown to really stop it.  No Django here: the
module is loaded from its file so config/__init__ (the Celery app) is not
imported either.
"""
from __future__ import annotations

import importlib.util
import sys
import time
import uuid
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "config" / "localservices.py"
_spec = importlib.util.spec_from_file_location("_localservices_under_test", _PATH)
ls = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = ls
_spec.loader.exec_module(ls)


def _port_of(service) -> int:
    return service.port


def _assert_stopped(service) -> None:
    service.stop()
    assert service.process.poll() is not None
    assert not ls.port_open("127.0.0.1", _port_of(service), timeout=0.3)
    service.stop()  # idempotent


def test_module_imports_only_the_standard_library():
    source = _PATH.read_text()
    top_level = [
        line for line in source.splitlines() if line.startswith(("import ", "from "))
    ]
    for line in top_level:
        module = line.split()[1].split(".")[0]
        assert module in sys.stdlib_module_names or module == "__future__", line


def test_free_port_and_port_open():
    port = ls.free_port()
    assert not ls.port_open("127.0.0.1", port, timeout=0.2)


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
    from confluent_kafka.admin import AdminClient, NewTopic

    with ls.start_kafka(tmp_path / "kafka") as kafka:
        assert kafka.url == f"127.0.0.1:{kafka.port}"
        assert (tmp_path / "kafka" / "kafka.log").exists()
        topic = f"t-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": kafka.url})
        for future in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
            future.result(timeout=10)

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


def test_ensure_services_uses_given_urls(tmp_path, capsys):
    env = {
        "DATABASE_URL": "postgres://u@db.example:5432/x",
        "REDIS_URL": "redis://cache.example:6379/1",
        "KAFKA_BOOTSTRAP_SERVERS": "broker.example:9092",
        "WHATSAPP_EMBEDDED": "1",
    }
    settings, started = ls.ensure_services(tmp_path / "var", env=env)
    assert started == []
    assert settings == {k: env[k] for k in settings}
    assert "postgres: from DATABASE_URL" in capsys.readouterr().err
