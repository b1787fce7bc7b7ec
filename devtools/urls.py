"""Small edits of service URLs: the dev tools point one server URL at another database."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def with_path(url: str, path: str) -> str:
    """``url`` with its path replaced: a Postgres database (``/name``) or a Redis db (``/12``)."""
    return urlunsplit(urlsplit(url)._replace(path=path))


def database_name(url: str) -> str:
    """The database a Postgres URL names."""
    return urlsplit(url).path.lstrip("/")


def hostport(url: str) -> str:
    """host:port of a URL, or the value itself when it is already host:port (Kafka's bootstrap)."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"
