"""Which process is counting: prometheus_client's multiprocess mode, set up before any
metric exists (each takes its storage from ValueClass when created), so
core.metrics.counters imports this first."""

from __future__ import annotations

import os
import socket

from prometheus_client import values

MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def process_identifier(pid: int | None = None) -> str:
    """Names a process's files in the multiprocess directory. The host name
    goes in with the pid so that containers sharing one directory (a volume, as
    in docker-compose.yml), each with its own pid 1, never write the same file."""
    return f"{socket.gethostname().replace('_', '-')}-{pid if pid is not None else os.getpid()}"


if MULTIPROCESS_DIR:
    values.ValueClass = values.MultiProcessValue(process_identifier)
