"""Health endpoints for load balancers and orchestrators (the Prometheus scrape, /metrics,
is core/metrics/views.py).

- `/healthz`: the process is up and serving (liveness); it checks nothing else,
  so a database outage never gets healthy web processes restarted.
- `/readyz`: the database, Redis and the Celery broker each answer (readiness);
  503 names the ones that failed. Errors are reported by class only, never a
  message that might carry a host's credentials.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from config.celery import app


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def check_database() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _ping(url: str) -> None:
    import redis

    timeout = settings.READYZ_TIMEOUT_SECONDS
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False)
    try:
        client.ping()
    finally:
        client.close()


def check_redis() -> None:
    _ping(settings.REDIS_URL)


def check_broker() -> None:
    """The Celery broker, through kombu, so any broker URL Celery accepts is checked the same way."""
    timeout = settings.READYZ_TIMEOUT_SECONDS
    with app.connection_for_write(
        url=settings.CELERY_BROKER_URL,
        connect_timeout=timeout,
        transport_options={"socket_connect_timeout": timeout, "socket_timeout": timeout},
    ) as connection:
        # kombu takes any number of seconds here; celery-types narrows it to int.
        connection.ensure_connection(
            max_retries=1,
            interval_start=0,
            interval_step=0,
            timeout=timeout,  # type: ignore[arg-type]
        )


CHECKS: dict[str, Callable[[], None]] = {"database": check_database, "redis": check_redis, "broker": check_broker}


@require_GET
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    results: dict[str, dict] = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:
            results[name] = {"ok": False, "error": type(exc).__name__}
        else:
            results[name] = {"ok": True}
        results[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
    failed = [name for name, result in results.items() if not result["ok"]]
    body = {"status": "unavailable" if failed else "ok", "failed": failed, "checks": results}
    return JsonResponse(body, status=503 if failed else 200)
