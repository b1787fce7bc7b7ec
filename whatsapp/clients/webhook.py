"""The outgoing sales webhook: one signed JSON POST, classified into ok, retry later, or give up.

The receiver is someone else's server, so every failure is mapped onto the two action
errors the saga understands. Messages name the host and the status code but never the
secret, the full URL (webhook URLs often carry tokens in the path) or the response body.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from whatsapp.breakers import breaker_for
from django.conf import settings

from whatsapp.actions.base import PermanentActionError, RetryableActionError

DEFAULT_TIMEOUT: tuple[float, float] = (3, 10)
SIGNATURE_HEADER = "X-Signature-SHA256"
# A receiver asking us to wait a day is misconfigured; the saga should not sleep on it that long.
MAX_RETRY_AFTER_SECONDS = 3600.0


@dataclass(frozen=True)
class WebhookResponse:
    status_code: int


def encode_body(payload: dict[str, Any]) -> bytes:
    """Compact, key-sorted JSON, so re-sending a stored payload yields the same bytes (and signature)."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def post_json(url: str, payload: dict[str, Any], *, idempotency_key: str, secret: str = "") -> WebhookResponse:
    """POST payload to url. Returns on 2xx; raises RetryableActionError or PermanentActionError otherwise.

    The Idempotency-Key header lets the receiver drop a repeat: our database commit and the
    HTTP call cannot be atomic, so a crash between them means the same POST is sent again.
    """
    body = encode_body(payload)
    headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
    if secret:
        headers[SIGNATURE_HEADER] = sign(body, secret)
    host = urlsplit(url).netloc or "webhook"
    # Through the host's breaker: an open one raises CircuitOpen without calling.
    return breaker_for(f"webhook:{host}").call(_post, url, body, headers, host)


def _post(url: str, body: bytes, headers: dict[str, str], host: str) -> WebhookResponse:
    try:
        response = requests.post(url, data=body, headers=headers, timeout=_timeout(), allow_redirects=False)
    except requests.Timeout as exc:
        raise RetryableActionError(f"sales webhook at {host} timed out") from exc
    except requests.ConnectionError as exc:
        raise RetryableActionError(f"sales webhook at {host} could not be reached") from exc
    except requests.RequestException as exc:
        # Invalid URL, bad scheme and the like: configuration, not a passing fault.
        raise PermanentActionError(f"sales webhook at {host} refused the request ({type(exc).__name__})") from exc

    status = response.status_code
    response.close()
    if 200 <= status < 300:
        return WebhookResponse(status_code=status)
    if status == 429 or status >= 500:
        raise RetryableActionError(
            f"sales webhook at {host} answered HTTP {status}",
            retry_after=_retry_after(response.headers.get("Retry-After")),
        )
    # Other 4xx, and 3xx since redirects are not followed: the request itself is wrong.
    raise PermanentActionError(f"sales webhook at {host} answered HTTP {status}")


def _timeout() -> tuple[float, float]:
    """Read per call so settings overrides (and tests) take effect without a restart."""
    value = getattr(settings, "SALES_WEBHOOK_TIMEOUT", DEFAULT_TIMEOUT)
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    connect, read = value
    return (float(connect), float(read))


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
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)
