"""Bare Celery: the physical limit the pipeline is measured against.

A Celery app with the project's worker settings (every CELERY_* setting of
config.settings: acks late, prefetch 1, json, the Redis transport options) and
one task that does nothing. The benchmark sends chains of it as long as the
pipeline's median chain, on the same queue and priorities, to workers started
with the same flags, on the same Redis. The last task of a chain counts it
done in Redis, the only work any of them does.

    celery -A tests.benchmarks.noop worker -c 2 -Q pipeline
"""

from __future__ import annotations

import os

import redis
from celery import Celery, chain

from config.task_limits import BoundedTask

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("bench_noop")
app.config_from_object("config.celery_settings:SETTINGS", namespace="CELERY")

DONE_KEY = "bench:noop:done"
_client: redis.Redis | None = None


# Limits as every task of ours has them (config/task_limits.py): the worker refuses to start
# on a task that could outlive the broker's visibility timeout, and bare Celery is measured
# with the same task class the pipeline's tasks use.
@app.task(name="bench.noop", base=BoundedTask, soft_time_limit=20, time_limit=25, max_retry_countdown=25)
def noop(last: bool = False) -> None:
    global _client
    if last:
        if _client is None:
            _client = redis.Redis.from_url(os.environ["REDIS_URL"])
        _client.incr(DONE_KEY)


def chain_of(length: int, index: int):
    """As the pipeline sends a message: its first task behind the ones under way
    (priority 3), the rest at 0; deterministic task ids."""
    tasks = [
        noop.si(last=(step == length - 1)).set(task_id=f"noop-{index}-{step}", priority=3 if step == 0 else 0)
        for step in range(length)
    ]
    return chain(*tasks)
