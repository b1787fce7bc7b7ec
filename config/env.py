"""Reading settings from the environment.

Every reader raises :class:`SettingError` naming the variable, so a bad
deployment fails at start with one line that says what to fix instead of a
traceback from deep inside a driver.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from dj_database_url import DBConfig

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingError(ImproperlyConfigured):
    """A required setting is missing or malformed."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        super().__init__(f"setting {name}: {problem}")


class Env:
    # Its readers are named for the type they return (env.str, env.int, ...), which hides
    # the builtins inside the class: annotations after them spell out builtins.str etc.

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def str(self, name: str, default: str | None = None, *, required: bool = False) -> str:
        value = self.raw(name)
        if value is None:
            if required or default is None:
                raise SettingError(name, "is required but not set")
            return default
        return value

    def optional(self, name: builtins.str) -> builtins.str | None:
        return self.raw(name)

    def bool(self, name: builtins.str, default: builtins.bool = False) -> builtins.bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise SettingError(name, f"must be a boolean (true/false/1/0), got {value!r}")

    def int(self, name: builtins.str, default: builtins.int, *, minimum: builtins.int | None = None) -> builtins.int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise SettingError(name, f"must be an integer, got {value!r}") from None
        if minimum is not None and number < minimum:
            raise SettingError(name, f"must be >= {minimum}, got {number}")
        return number

    def float(
        self, name: builtins.str, default: builtins.float, *, minimum: builtins.float | None = None
    ) -> builtins.float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise SettingError(name, f"must be a number, got {value!r}") from None
        if minimum is not None and number < minimum:
            raise SettingError(name, f"must be >= {minimum}, got {number}")
        return number

    def list(self, name: builtins.str, default: builtins.list[builtins.str]) -> builtins.list[builtins.str]:
        value = self.raw(name)
        if value is None:
            return default
        return [item.strip() for item in value.split(",") if item.strip()]

    def url(
        self,
        name: builtins.str,
        default: builtins.str,
        *,
        schemes: tuple[builtins.str, ...],
        credentials: builtins.bool = True,
    ) -> builtins.str:
        """A URL with one of `schemes` and a host; with credentials=False, also without
        user:password@ (for URLs that get printed or put in error messages)."""
        value = self.str(name, default)
        try:
            parts = urlsplit(value)
        except ValueError:
            raise SettingError(name, "is not a valid URL") from None
        if not credentials and (parts.username is not None or "@" in parts.netloc):
            raise SettingError(name, "must not carry credentials (user:password@)")
        if parts.scheme not in schemes:
            raise SettingError(
                name, f"must be a URL with scheme {' or '.join(schemes)}, got scheme {parts.scheme or 'none'!r}"
            )
        if not parts.hostname and "host=" not in parts.query:
            raise SettingError(name, "has no host")
        return value

    def database(self, name: builtins.str, default: builtins.str, *, conn_max_age: builtins.int = 0) -> DBConfig:
        import dj_database_url

        value = self.url(name, default, schemes=("postgres", "postgresql", "pgsql"))
        try:
            # No health check before each reuse (a SELECT 1 per task): a connection that broke
            # fails its next query, and Django closes a connection that had errors (config.celery).
            config = dj_database_url.parse(value, conn_max_age=conn_max_age, conn_health_checks=False)
        except ValueError as exc:
            raise SettingError(name, str(exc)) from None
        if not config.get("NAME"):
            raise SettingError(name, "names no database (expected postgres://user@host:port/dbname)")
        return config

    def kafka_servers(self, name: builtins.str, default: builtins.str) -> builtins.str:
        value = self.str(name, default)
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise SettingError(name, f"must be host:port[,host:port...], got {value!r}")
        return value


def redact_url(url: str) -> str:
    """Hide the password in a URL so it can be printed."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url
