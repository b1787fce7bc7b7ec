"""Every queue the pipeline sends to is declared (CELERY_TASK_QUEUES), as Celery would have
created it on first use, so Flower's Broker tab, `celery inspect active_queues` and a worker
started without -Q know all of them, and routing stays as it was."""

from __future__ import annotations

from django.conf import settings
from kombu import Exchange, Queue

from config.celery import app
from whatsapp.actions.registry import executors
from whatsapp.pipeline.chains import REPLY_QUEUE


def test_every_queue_the_pipeline_sends_to_is_declared() -> None:
    declared = {queue.name for queue in settings.CELERY_TASK_QUEUES}
    used = {settings.CELERY_TASK_DEFAULT_QUEUE, REPLY_QUEUE, *(executor.queue for executor in executors)}
    assert used <= declared, f"not in CELERY_TASK_QUEUES: {sorted(used - declared)}"
    assert declared == {"pipeline", "webhooks", "whatsapp"}


def test_declared_queues_route_as_the_ones_celery_created_before() -> None:
    for name in ("pipeline", "webhooks", "whatsapp"):
        queue = app.amqp.queues[name]
        assert queue == Queue(name, Exchange(name), routing_key=name)
        assert queue.exchange.type == "direct" and not queue.queue_arguments
