"""Serving the metrics: the /metrics body (every process's counts and the apps'
scrape-time gauges), ingest's own port, and forgetting a process that ended."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import Metric

from core.dotted import import_path
from core.metrics.process import MULTIPROCESS_DIR, process_identifier

log = logging.getLogger(__name__)


def mark_process_dead(pid: int) -> None:
    """A process of this host's multiprocess group ended (a Celery child, ingest, a
    gunicorn worker): drop its live gauges."""
    if MULTIPROCESS_DIR:
        multiprocess.mark_process_dead(process_identifier(pid), MULTIPROCESS_DIR)


class _ThisProcess:
    """This process's own metrics, for when there is no multiprocess directory."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


@functools.cache
def scrape_time_collectors() -> tuple[Any, ...]:
    """The collectors settings.METRICS_COLLECTORS names (dotted paths of classes), made once:
    the apps read their own gauges at scrape time, and this layer never imports them."""
    return tuple(import_path(path)() for path in settings.METRICS_COLLECTORS)


def exposition() -> tuple[bytes, str]:
    """The /metrics body: every process's counts (or this one's) and the scrape-time gauges.
    A registry per scrape, as prometheus_client advises for multiprocess mode."""
    registry = CollectorRegistry(auto_describe=False)
    if MULTIPROCESS_DIR:
        multiprocess.MultiProcessCollector(registry, path=MULTIPROCESS_DIR)
    else:
        registry.register(_ThisProcess())
    for collector in scrape_time_collectors():
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def serve_ingest(port: int, addr: str = "127.0.0.1") -> Any | None:
    """Serve this process's own counts on addr:port (ingest, scraped alone). Port 0: not served.
    Not being able to bind is logged, not fatal: taking messages in matters more.
    Only counters are there (no scrape-time reads), and no token is asked for:
    INGEST_METRICS_ADDR keeps the port on this machine or a private network."""
    if not port:
        return None
    try:
        server, _thread = start_http_server(port, addr=addr, registry=REGISTRY)
    except OSError as exc:
        log.error("metrics: cannot serve ingest metrics on %s:%s (%s); carrying on without", addr, port, exc)
        return None
    log.info("metrics: ingest metrics on http://%s:%s/metrics", addr, port)
    return server
