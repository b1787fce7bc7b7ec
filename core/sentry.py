"""Setting sentry-sdk up for a process (web, workers, ingest alike), and what every event
leaves without. Apart from core.tracing, which carries a message's trace between processes
whether or not anything is sent."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import sentry_sdk
from sentry_sdk.types import Event


def init_sentry(
    *, dsn: str | None, traces_sample_rate: float, environment: str | None, release: str | None, service: str
) -> None:
    """Set up sentry-sdk for this process.

    Called from whatsapp's AppConfig.ready(), so web, workers and ingest alike."""
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration
    from sentry_sdk.integrations.redis import RedisIntegration
    from sentry_sdk.integrations.stdlib import StdlibIntegration

    sentry_sdk.init(
        dsn=dsn or None,
        # Without a DSN nothing would be sent: sample nothing, so no transaction is recorded
        # and serialized for nothing. Unsampled transactions and spans still have their ids,
        # which propagate to every task and log line all the same.
        traces_sample_rate=traces_sample_rate if dsn else 0.0,
        traces_sampler=sampler(traces_sample_rate) if dsn else None,
        environment=environment,
        release=release,
        integrations=[
            CeleryIntegration(propagate_traces=True),
            DjangoIntegration(),
            LoggingIntegration(level=logging.INFO, event_level=logging.ERROR),
        ]
        if dsn
        else [],
        # Without a DSN, Django's integration would only time every SQL query and request,
        # the logging one keep a breadcrumb of every log line, and the Celery one wrap every
        # task and every send in an unsampled transaction, all for nothing: nothing is sent.
        # Trace ids still travel with every task into its log lines, by task_trace and
        # stamp_trace below.
        auto_enabling_integrations=bool(dsn),
        default_integrations=bool(dsn),
        # Its span for a Redis command that raises is entered and never exited (sentry-sdk
        # 2.75), leaving a stale current span, and its trace id on later log lines, after any
        # Redis outage. Redis calls here are the broker's and the breakers', not worth a span.
        # Its span and breadcrumb for an http.client request carry the request's path and
        # query, where a sales webhook URL may hold a token: core/clients/http.py makes
        # the outbound call's span itself, named by the destination's origin only.
        disabled_integrations=[RedisIntegration(), StdlibIntegration()],
        # No PII by default (user, cookies, SQL parameters); and no local variables,
        # which hold message payloads.
        include_local_variables=False,
        max_request_body_size="never",
        trace_propagation_targets=[],  # no trace headers to Meta or the businesses' CRMs
        before_send=scrub_event,
        before_send_transaction=scrub_event,
    )
    sentry_sdk.get_global_scope().set_tag("service", service)


# Request headers that carry a credential or a signature of the body.
_SECRET_HEADERS = frozenset({"authorization", "cookie", "x-hub-signature-256", "x-hub-signature", "x-metrics-token"})


def scrub_event(event: Event, hint: dict[str, Any] | None = None) -> Event:
    """An event or transaction as sentry-sdk would send it, without what the request carried:
    the webhook handshake's query string holds the verify token, a body holds customers'
    messages. The URL keeps its path; credentials' headers are filtered."""
    request: Any = event.get("request")
    if isinstance(request, dict):
        for key in ("query_string", "data", "cookies", "env"):
            request.pop(key, None)
        url = request.get("url")
        if isinstance(url, str):
            request["url"] = url.split("?", 1)[0]
        headers = request.get("headers")
        if isinstance(headers, dict):
            for name in list(headers):
                if str(name).lower() in _SECRET_HEADERS:
                    headers[name] = "[Filtered]"
    return event


# Probes and scrapes: a transaction each would drown the messages' traces.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def sampler(rate: float) -> Callable[[dict[str, Any]], float]:
    """Sample at `rate`, follow the upstream decision when the trace came with one (so a
    message's trace is whole or absent), and never sample health checks or scrapes."""

    def decide(context: dict[str, Any]) -> float:
        environ = context.get("wsgi_environ") or {}
        if environ.get("PATH_INFO") in QUIET_PATHS:
            return 0.0
        parent = context.get("parent_sampled")
        return float(parent) if parent is not None else rate

    return decide
