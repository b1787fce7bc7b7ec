"""The outgoing sales webhook: one signed JSON POST, classified into ok, retry later, or give up.

The receiver is someone else's server, so every failure is mapped onto the two action
errors the saga understands. Webhook URLs often carry secrets (a token in the path or
the query, or user:password@), so nothing here ever names more of the URL than its
origin, scheme://host:port: not the error messages, not the breaker's name (and so
not the metrics' labels), not the log lines. The secret and the response body are
never quoted either.

Each call is bounded (core.clients.http): a connect timeout, a total deadline
(SALES_WEBHOOK_DEADLINE_SECONDS) and at most SALES_WEBHOOK_MAX_RESPONSE_BYTES of the
answer read. The destination is checked on every call (core.clients.destinations)
and the connection goes to the address that was checked.

The signature (when the business has a secret) follows Stripe's scheme, so a captured
request cannot be replayed later: ``X-Signature: t=<unix seconds>,v1=<hex>``, where hex
is HMAC-SHA256(secret, "<t>.<raw body>"). A receiver recomputes it over the raw body,
compares in constant time, and refuses a t more than a few minutes from its clock
(`verify` below does exactly that).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from django.conf import settings

from config.redaction import origin
from core.breakers import breaker_for
from core.clients import destinations, http
from core.errors import PermanentActionError, RetryableActionError

SIGNATURE_HEADER = "X-Signature"
SIGNATURE_VERSION = "v1"
# How far a receiver should accept t from its own clock (Stripe's default).
SIGNATURE_TOLERANCE_SECONDS = 300
DEFAULT_CONNECT_TIMEOUT = 3.0
DEFAULT_DEADLINE_SECONDS = 10.0
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024
# A receiver asking us to wait a day is misconfigured; the saga should not sleep on it that long.
MAX_RETRY_AFTER_SECONDS = 3600.0


@dataclass(frozen=True)
class WebhookResponse:
    status_code: int


def encode_body(payload: dict[str, Any]) -> bytes:
    """Compact, key-sorted JSON, so re-sending a stored payload yields the same bytes."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The X-Signature value: t=<timestamp>,v1=<HMAC-SHA256 of "<timestamp>.<body>">."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},{SIGNATURE_VERSION}={digest}"


def verify(
    header: str, body: bytes, secret: str, *, tolerance: float = SIGNATURE_TOLERANCE_SECONDS, now: float | None = None
) -> bool:
    """What a receiver does: True when header signs body with secret and its t is within tolerance of now."""
    fields: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(body, secret, timestamp).rsplit("=", 1)[1]
    return any(hmac.compare_digest(expected, given) for given in fields.get(SIGNATURE_VERSION, []))


def breaker_name(url: str) -> str:
    """webhook:<scheme>://<host>:<port>: one breaker per receiving server, and nothing of the URL's secrets."""
    return f"webhook:{origin(url)}"


def post_json(url: str, payload: dict[str, Any], *, idempotency_key: str, secret: str = "") -> WebhookResponse:
    """POST payload to url. Returns on 2xx; raises RetryableActionError or PermanentActionError otherwise.

    The Idempotency-Key header lets the receiver drop a repeat: our database commit and the
    HTTP call cannot be atomic, so a crash between them means the same POST is sent again.
    """
    where = origin(url)
    problem = destinations.url_problem(url, allow_credentials=True)  # the form refuses them; old rows still work
    if problem:
        # Refused before the breaker: a bad URL says nothing about the receiver's health.
        raise PermanentActionError(f"sales webhook URL {where} {problem}")
    body = encode_body(payload)
    headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
    # Through the server's breaker: an open one raises CircuitOpen without calling.
    return breaker_for(breaker_name(url)).call(_post, url, body, headers, secret, where)


def _post(url: str, body: bytes, headers: dict[str, str], secret: str, where: str) -> WebhookResponse:
    failure: Exception | None = None
    try:
        address = destinations.resolve(url)
    except destinations.DestinationRefused as exc:
        failure = PermanentActionError(str(exc))
    except (socket.gaierror, UnicodeError):
        failure = RetryableActionError(f"sales webhook at {where}: the host name could not be resolved")
    if failure is not None:
        raise failure
    if secret:
        # Signed at the moment of sending, so t says when this attempt went out.
        headers = {**headers, SIGNATURE_HEADER: sign(body, secret, int(time.time()))}
    try:
        answer = http.post(
            url, body, headers, _limits(), address=address, ca_bundle=getattr(settings, "OUTBOUND_CA_BUNDLE", None)
        )
    except http.ResponseTooLarge:
        # A receiver that answers a webhook with that much is broken; asking again will not shrink it.
        failure = PermanentActionError(
            f"sales webhook at {where} answered with more than {_limits().max_body} bytes; not read"
        )
    except http.DeadlineExceeded:
        failure = RetryableActionError(
            f"sales webhook at {where} timed out: no complete answer within {_limits().deadline:g} s"
        )
    except (http.ConnectTimedOut, http.ReadTimedOut):
        failure = RetryableActionError(f"sales webhook at {where} timed out")
    except http.InvalidURL:
        failure = PermanentActionError(f"sales webhook URL {where} is not a valid http(s) URL")
    except http.NotConnected as exc:
        failure = RetryableActionError(f"sales webhook at {where} could not be reached ({_detail(exc)})")
    except http.HttpError:
        failure = RetryableActionError(
            f"sales webhook at {where} dropped the connection or answered with something that is not HTTP"
        )
    if failure is not None:
        raise failure  # outside the except blocks: nothing is chained to it

    status = answer.status
    if 200 <= status < 300:
        return WebhookResponse(status_code=status)
    if status == 429 or status >= 500:
        raise RetryableActionError(
            f"sales webhook at {where} answered HTTP {status}",
            retry_after=_retry_after(answer.headers.get("retry-after")),
        )
    # Other 4xx, and 3xx since redirects are not followed: the request itself is wrong.
    raise PermanentActionError(f"sales webhook at {where} answered HTTP {status}")


def _detail(exc: http.HttpError) -> str:
    """The client's own words after the origin (they name no more than it)."""
    return str(exc).split(": ", 1)[-1]


def _limits() -> http.Limits:
    """Read per call so settings overrides (and tests) take effect without a restart."""
    deadline = float(getattr(settings, "SALES_WEBHOOK_DEADLINE_SECONDS", DEFAULT_DEADLINE_SECONDS))
    return http.Limits(
        connect_timeout=float(getattr(settings, "SALES_WEBHOOK_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT)),
        read_timeout=deadline,
        deadline=deadline,
        max_body=int(getattr(settings, "SALES_WEBHOOK_MAX_RESPONSE_BYTES", DEFAULT_MAX_RESPONSE_BYTES)),
    )


def _retry_after(value: str | None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date; anything else is ignored."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)
