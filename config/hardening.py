"""Settings that would fail open are refused while the settings load.

Each check returns the problem as text (None when the value is fine); config/settings.py
raises SettingError with it, so the process stops at start with one line naming the setting.
Plain functions of their inputs, so the unit tests call them without reloading settings.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

# Django's secret key signs sessions, CSRF tokens and password-reset links: one anybody can
# read in this repository is no secret. These are the literal keys the repository ships
# (tests/unit/config/test_hardening.py greps for more): the DEBUG default in
# config/settings.py, the image's collectstatic key (Dockerfile), the demo's, the test
# suite's and the benchmarks' (the last three now make a random key; their old literals
# stay refused, as copies of them may live on in someone's .env).
PUBLISHED_SECRET_KEYS = frozenset(
    {
        "insecure-local-development-key",
        "collectstatic-only-build-key-not-used-at-run-time",
        "demo-only-secret-key-never-use-in-production-0123456789",
        "test-only-secret-key-not-for-production-use-0123456789",
        "bench-only-secret-key-never-use-in-production-0123456789",
    }
)
# Django's `startproject` makes keys with this prefix, and `check --deploy` calls them insecure.
DJANGO_INSECURE_PREFIX = "django-insecure-"
# What `check --deploy` asks of a key (security.W009), and what .env.example makes.
SECRET_KEY_MIN_LENGTH = 50

# Graph API versions as Meta names them in its URLs: v21.0, v22.0.
# ASCII digits only, and the whole string (fullmatch: no trailing newline as `$` allows).
GRAPH_VERSION = re.compile(r"v\d+\.\d+", re.ASCII)
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def secret_key_problem(key: str, *, debug: bool) -> str | None:
    """Why SECRET_KEY may not sign anything outside DEBUG, or None."""
    if debug:
        return None
    if key in PUBLISHED_SECRET_KEYS:
        return "is a key published in this repository; make your own (.env.example shows how)"
    if key.startswith(DJANGO_INSECURE_PREFIX):
        return f"starts with {DJANGO_INSECURE_PREFIX!r} (a startproject key); make your own (.env.example shows how)"
    if len(key) < SECRET_KEY_MIN_LENGTH:
        return f"must be at least {SECRET_KEY_MIN_LENGTH} characters when DEBUG is off, got {len(key)}"
    return None


def is_loopback(host: str | None) -> bool:
    """Whether `host` names this machine: localhost, 127.0.0.0/8 or ::1."""
    if not host:
        return False
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def graph_base_url_problem(url: str, *, debug: bool) -> str | None:
    """Why replies may not go to `url`, or None. The bearer token travels in every request:
    plain http is for DEBUG and for a stand-in on this machine (the tests' and `make up`'s)."""
    parts = urlsplit(url)
    if parts.scheme == "http" and not debug and not is_loopback(parts.hostname):
        return (
            f"must be https:// (it carries the access token), got http:// to {parts.hostname!r}; "
            "plain http is allowed only with DEBUG on or to a loopback host"
        )
    return None


def graph_version_problem(version: str) -> str | None:
    """Why `version` is not a Graph API version: it goes into every URL as a path segment,
    so anything but vN.N (a slash, a dot-dot, a query) would change where replies go."""
    if not GRAPH_VERSION.fullmatch(version):
        return f"must look like v21.0 (v, digits, a dot, digits), got {version!r}"
    return None
