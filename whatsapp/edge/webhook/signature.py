"""The two secrets of Meta's webhooks: the verify token of the subscription handshake, and the
app secret that signs every POST (X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>).

The HMAC is over the raw body bytes as received. Parsing and re-serialising the JSON would
change them (Meta escapes non-ASCII characters as \\uXXXX, json.dumps may not, and key order
and spacing differ), which is why emoji and accents fail in receivers that do so."""

from __future__ import annotations

import hashlib
import hmac

_PREFIX = "sha256="


def expected_signature(body: bytes, secret: str) -> str:
    """The header value Meta sends for `body` (the tests and the demo sign with it too)."""
    return _PREFIX + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def signature_valid(body: bytes, header: str | None, secret: str) -> bool:
    """True only for the signature of exactly these bytes, compared in constant time."""
    if not header or not secret:
        return False
    given = header.strip()
    if given[: len(_PREFIX)].lower() != _PREFIX:
        return False
    digest = given[len(_PREFIX) :].lower()
    expected = expected_signature(body, secret)[len(_PREFIX) :]
    # Bytes, so a header holding non-ASCII characters is a mismatch rather than a TypeError.
    return hmac.compare_digest(expected.encode("ascii"), digest.encode("utf-8", "replace"))


def token_matches(given: str | None, expected: str | None) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))
