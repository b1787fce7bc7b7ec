"""What runs around every pipeline task: its log context, Sentry tags and stage timing,
and forgetting a worker child's metrics when it exits. Connected once, when the app
starts (whatsapp.apps), not as a side effect of importing this module."""

from __future__ import annotations

import contextvars
import os
import time
from collections.abc import Mapping
from typing import Any

from celery.signals import before_task_publish, task_postrun, task_prerun, worker_process_shutdown

from config import logging as log_context
from core import tracing
from core.metrics import counters, serving

_running: dict[str, tuple[float, contextvars.Token[Mapping[str, Any]] | None]] = {}


def task_started(task_id: str | None = None, task: Any = None, args: Any = None, **_: Any) -> None:
    """A pipeline task's first two arguments are (processing_id, saga_run): bind them to its
    log lines and tag its transaction with them (Celery runs this inside the task's trace).
    Without a Sentry DSN there is no such transaction: the trace the task's message carries
    is bound to its log lines here, and stamp_trace passes it on to what the task sends."""
    fields: dict[str, Any] = {}
    if task is not None and not tracing.recording():
        fields.update(tracing.task_trace(task.request))
    if task is not None and task.name.startswith("whatsapp.") and args and len(args) >= 2 and isinstance(args[0], str):
        fields.update(processing_id=args[0], saga_run=args[1])
        tracing.tag_task(processing_id=args[0])
    token = log_context.bind(**fields) if fields else None
    if task_id is not None:
        _running[task_id] = (time.perf_counter(), token)


def task_ended(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    started, token = _running.pop(task_id, (None, None)) if task_id is not None else (None, None)
    if started is not None and task is not None and task.name.startswith("whatsapp."):
        counters.observe_stage(task.name.removeprefix("whatsapp."), time.perf_counter() - started)
    if token is not None:
        log_context.unbind(token)


def worker_process_ended(pid: int | None = None, **_: Any) -> None:
    serving.mark_process_dead(pid or os.getpid())


def connect() -> None:
    """Connect the hooks (once: the dispatch_uids make a second call a no-op)."""
    task_prerun.connect(task_started, weak=False, dispatch_uid="whatsapp.task_started")
    task_postrun.connect(task_ended, weak=False, dispatch_uid="whatsapp.task_ended")
    before_task_publish.connect(tracing.stamp_trace, weak=False, dispatch_uid="whatsapp.stamp_trace")
    worker_process_shutdown.connect(worker_process_ended, weak=False, dispatch_uid="whatsapp.worker_process_ended")
