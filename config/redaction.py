"""Taking secrets out of text before it is stored, served or logged.

Outbound URLs are configuration that may carry credentials: a sales webhook such as
``https://user:pass@crm.example.com/hooks/T0KEN?api_key=...`` holds them in its userinfo,
its path and its query alike, and there is no telling which part of a path is a token.
So every URL in a text is cut down to its origin, ``scheme://host:port`` (the port
explicit), which still says which service failed. Known secret values (the WhatsApp
access token, a business's webhook secret) are replaced wherever they appear.

This module imports no app, so settings, logging and every app can use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

REDACTED = "[redacted]"
DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "ws": 80,
    "wss": 443,
    "redis": 6379,
    "rediss": 6379,
    "postgres": 5432,
    "postgresql": 5432,
    "amqp": 5672,
    "kafka": 9092,
}
# A scheme, "://", then everything up to whitespace or a character that ends a URL in
# prose, JSON, a repr or a traceback ("...", '...', <...>, `...`).
_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.\-]{1,15})://([^\s'\"<>`\\]*)")
# urllib3 and requests name the request target apart from the host ("Max retries
# exceeded with url: /hooks/T0KEN?api_key=..."): the path and query go too.
_REQUEST_TARGET = re.compile(r"(\burl[=:] ?['\"]?)(/[^\s'\"]*)")
# Secrets shorter than this are not searched for: replacing "a" in every text would
# destroy it and hide nothing.
MIN_SECRET_LENGTH = 4


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL: no userinfo, path, query or fragment.

    The port is explicit (the scheme's default when the URL names none), so two URLs
    of one service always give the same text. A URL that cannot be parsed gives
    ``scheme://[unparseable]``: better a useless name than a leaked one.
    """
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        host = parts.hostname
        port = parts.port
    except ValueError:
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        return f"{scheme}://[unparseable]"
    if not host:
        return f"{scheme}://[unparseable]" if scheme else "[unparseable]"
    if ":" in host:
        host = f"[{host}]"  # IPv6
    port = port or DEFAULT_PORTS.get(scheme)
    return f"{scheme}://{host}:{port}" if port else f"{scheme}://{host}"


def redact_urls(text: str) -> str:
    """Every URL in text cut down to its origin, and every request target named as a url dropped."""
    if "://" in text:
        text = _URL.sub(lambda m: origin(m.group(0)), text)
    if "url" in text:
        text = _REQUEST_TARGET.sub(lambda m: m.group(1) + "/" + REDACTED, text)
    return text


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """URLs cut down to their origin and each known secret replaced by [redacted].

    Secrets are replaced first, so one that is also part of a URL is gone either way.
    """
    if not text:
        return text
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LENGTH and secret in text:
            text = text.replace(secret, REDACTED)
    return redact_urls(text)


def configured_secrets() -> tuple[str, ...]:
    """The process-wide secrets in Django's settings (the WhatsApp access token, the webhook's
    app secret and verify token), if settings are ready."""
    try:
        from django.conf import settings

        values = [
            getattr(settings, name, None)
            for name in ("WHATSAPP_ACCESS_TOKEN", "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN")
        ]
    except Exception:  # settings not configured: nothing known
        return ()
    return tuple(value for value in values if value)
