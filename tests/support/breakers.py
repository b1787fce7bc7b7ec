"""Breaker test helpers shared by tests/unit/core/test_breakers.py and
tests/integration/core/test_breakers.py: unique breaker names cleaned up afterwards, the
state changes a breaker published, and the calls a guarded function makes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import requests
from django.conf import settings

import core.breakers as breakers
from core.breakers import EVENTS_KEY, REGISTRY_KEY, BreakerConfig, keys_for, make_breaker


@pytest.fixture
def rdb() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def new_name(rdb: redis.Redis) -> Iterator[Callable[..., str]]:
    """Unique breaker names; their keys and events are deleted afterwards."""
    names: list[str] = []

    def make(kind: str = "test") -> str:
        name = f"{kind}:{uuid.uuid4().hex[:12]}"
        names.append(name)
        return name

    yield make
    for name in names:
        rdb.delete(*keys_for(name)[:4])
        rdb.zrem(REGISTRY_KEY, name)
        stale = [entry_id for entry_id, fields in rdb.xrange(EVENTS_KEY) if fields[b"name"] == name.encode()]
        if stale:
            rdb.xdel(EVENTS_KEY, *stale)
        breakers._breakers.pop(name, None)


def events(rdb: redis.Redis, name: str) -> list[tuple[str, str]]:
    return [
        (fields[b"from"].decode(), fields[b"to"].decode())
        for _, fields in rdb.xrange(EVENTS_KEY)
        if fields[b"name"] == name.encode()
    ]


def get(url: str) -> int:
    response = requests.get(url, timeout=5)
    response.raise_for_status()
    return response.status_code


def fail() -> None:
    raise ConnectionError("service down")


def ok() -> str:
    return "ok"


def breaker(name: str, url: str, **config: Any) -> breakers.Breaker:
    return make_breaker(name, BreakerConfig(**config), redis_client=url, retry_seconds=60)
