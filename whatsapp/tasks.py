"""The pipeline's Celery tasks: thin wrappers that let whatsapp.saga decide.

Tasks take ids, never payloads, so they read well in Flower and a redelivered
copy always acts on the current state in Postgres. Task ids are
"<processing_id>:<run>:<step>", deterministic per message, run and step.
"""
from __future__ import annotations

import logging
import random
import time

from celery import chain, shared_task
from celery.exceptions import Ignore
from celery.signals import task_postrun, task_prerun, worker_process_shutdown
from django.db import InterfaceError, OperationalError

from config import logging as log_context
from core import tracing
from whatsapp import metrics, saga
from whatsapp.fairness import BULK_LANE, NEW_MESSAGE, NORMAL_LANE

log = logging.getLogger(__name__)

# A stage that cannot reach Postgres waits and tries again.
DB_RETRY = {"autoretry_for": (OperationalError, InterfaceError), "retry_backoff": 2, "retry_backoff_max": 60,
            "retry_jitter": True, "max_retries": 20}


def task_id(processing_id: str, saga_run: int, step: str) -> str:
    return f"{processing_id}:{saga_run}:{step}"


def pipeline_steps(processing_id: str, saga_run: int, *, lane: int = NORMAL_LANE) -> list:
    """dedupe then intent; intent extends the chain with the planned actions.
    Every task of the chain runs on the message's lane (whatsapp.fairness),
    the first behind the lane's messages already under way.

    The chain as its list of tasks: whatsapp.pipeline sends it from the list,
    since building a Celery chain object costs more than sending it."""
    return [
        dedupe.si(processing_id, saga_run).set(task_id=task_id(processing_id, saga_run, "dedupe"),
                                               priority=lane + NEW_MESSAGE),
        intent.si(processing_id, saga_run).set(task_id=task_id(processing_id, saga_run, "intent"), priority=lane),
    ]


def pipeline_signature(processing_id: str, saga_run: int, *, lane: int = NORMAL_LANE):
    """The pipeline_steps as one chain."""
    return chain(*pipeline_steps(processing_id, saga_run, lane=lane))


def lane_of(task) -> int:
    """The lane the running task was sent on, for the tasks it sends next."""
    priority = (task.request.delivery_info or {}).get("priority")
    return BULK_LANE if priority is not None and int(priority) >= BULK_LANE else NORMAL_LANE


@shared_task(name="whatsapp.dedupe", bind=True, **DB_RETRY)
def dedupe(self, processing_id: str, saga_run: int) -> None:
    """Claim the inbox row. Any state but RECEIVED stops the chain quietly:
    a duplicate delivery, or a copy Redis redelivered, does nothing."""
    with tracing.span("whatsapp.dedupe", "claim the inbox row"):
        claimed = saga.claim(processing_id, saga_run)
    if not claimed:
        log.info("dedupe: %s run %s already claimed, finished or purged; stopping this copy", processing_id, saga_run)
        raise Ignore()


@shared_task(name="whatsapp.intent", bind=True, **DB_RETRY)
def intent(self, processing_id: str, saga_run: int):
    try:
        steps = saga.plan(processing_id, saga_run)
    except saga.SagaStopped as stopped:
        log.info("intent: %s", stopped)
        raise Ignore()
    except (OperationalError, InterfaceError):
        raise
    except Exception as exc:
        import traceback

        saga.fail(processing_id, saga_run, stage="intent", reason="non_retryable",
                  error=f"{type(exc).__name__}: {exc}"[:4000], tb=traceback.format_exc())
        start_compensation(processing_id, saga_run)
        raise Ignore()
    # The planned actions go out as a chain of their own, sent from here: intent is the last
    # task of its chain, so this is what Task.replace would do, without its Ignore (an
    # exception Celery turns into a traceback report on every message).
    actions_signature(processing_id, saga_run, steps, lane=lane_of(self)).apply_async()
    return "planned: " + (", ".join(step.action for step in steps) or "no action")


def actions_signature(processing_id: str, saga_run: int, steps, *, lane: int = NORMAL_LANE):
    """The planned actions in order, then finish."""
    from whatsapp.actions.registry import executors

    rest = [
        execute_action.si(processing_id, saga_run, step.order).set(
            task_id=task_id(processing_id, saga_run, f"action{step.order}-{step.action}"),
            queue=executors.get(step.action).queue, priority=lane)
        for step in steps
    ]
    rest.append(send_reply.si(processing_id, saga_run).set(task_id=task_id(processing_id, saga_run, "reply"),
                                                           queue="whatsapp", priority=lane))
    rest.append(finish.si(processing_id, saga_run).set(task_id=task_id(processing_id, saga_run, "finish"),
                                                       priority=lane))
    return chain(*rest)


def reply_signature(processing_id: str, saga_run: int):
    """For requeueing a failed reply: send it again, then finish."""
    return chain(
        send_reply.si(processing_id, saga_run).set(task_id=task_id(processing_id, saga_run, "reply"), queue="whatsapp"),
        finish.si(processing_id, saga_run).set(task_id=task_id(processing_id, saga_run, "finish")),
    )


@shared_task(name="whatsapp.send_reply", bind=True, max_retries=None, **{k: v for k, v in DB_RETRY.items() if k != "max_retries"})
def send_reply(self, processing_id: str, saga_run: int) -> None:
    # A failed reply is dead-lettered inside saga.reply; nothing to compensate.
    follow(self, "reply", lambda jitter: saga.reply(processing_id, saga_run, jitter=jitter))


def resume_signature(processing_id: str, saga_run: int, *, planned: bool):
    """For the sweeper: carry on a PROCESSING message from its saga rows.
    Succeeded steps are no-ops when their task runs again."""
    if not planned:
        return intent.si(processing_id, saga_run).set(task_id=task_id(processing_id, saga_run, "intent"))
    from whatsapp.models import SagaStep

    steps = SagaStep.objects.filter(message__processing_id=processing_id, saga_run=saga_run).order_by("order")
    return actions_signature(processing_id, saga_run, list(steps))


@shared_task(name="whatsapp.sweep")
def sweep() -> dict:
    from whatsapp.sweeper import sweep as run_sweep

    return run_sweep().as_dict()


@shared_task(name="whatsapp.execute_action", bind=True, max_retries=None, **{k: v for k, v in DB_RETRY.items() if k != "max_retries"})
def execute_action(self, processing_id: str, saga_run: int, order: int) -> None:
    follow(self, "action", lambda jitter: saga.run_step(processing_id, saga_run, order, jitter=jitter),
           on_failure=lambda: start_compensation(processing_id, saga_run))


def follow(task, stage: str, step, on_failure=None) -> None:
    """Run a saga step and do what its outcome says: carry on, retry later,
    or stop the chain (after on_failure) when the run failed or moved on."""
    try:
        outcome = step(random.uniform(0.9, 1.1))
    except saga.SagaStopped as stopped:
        log.info("%s: %s", stage, stopped)
        raise Ignore()
    if outcome.done:
        return
    if outcome.retry_in is not None:
        raise task.retry(countdown=outcome.retry_in)
    if on_failure is not None:
        on_failure()
    raise Ignore()


def start_compensation(processing_id: str, saga_run: int, countdown: float = 0) -> None:
    compensate.apply_async(args=[processing_id, saga_run], countdown=countdown,
                           task_id=task_id(processing_id, saga_run, "compensate"))


@shared_task(name="whatsapp.compensate", bind=True, max_retries=None, **{k: v for k, v in DB_RETRY.items() if k != "max_retries"})
def compensate(self, processing_id: str, saga_run: int) -> None:
    """Undo what the failed run did, in reverse, then dead-letter it. Reads
    everything from Postgres, so running it twice is the same as once."""
    try:
        if not saga.compensate_steps(processing_id, saga_run):
            delay = saga.RETRY_DELAYS[min(self.request.retries, len(saga.RETRY_DELAYS) - 1)] * random.uniform(0.9, 1.1)
            raise self.retry(countdown=delay)
        entry = saga.dead_letter(processing_id, saga_run)
    except saga.MessagePurged as purged:
        log.info("compensate: %s", purged)
        raise Ignore()
    if entry is not None:
        log.warning("dead-lettered %s run %s at %s (%s) as DLQ #%s",
                    processing_id, saga_run, entry.stage, entry.reason, entry.pk)


@shared_task(name="whatsapp.finish", bind=True, **DB_RETRY)
def finish(self, processing_id: str, saga_run: int) -> None:
    try:
        with tracing.span("whatsapp.finish", "mark the message processed"):
            saga.finish(processing_id, saga_run)
    except saga.SagaStopped as stopped:
        log.info("finish: %s", stopped)
        raise Ignore()


# --- every task: its log context, Sentry tags and stage timing ---------------------------------
_running: dict[str, tuple[float, object | None]] = {}


@task_prerun.connect
def _task_started(task_id: str | None = None, task=None, args=None, **_) -> None:
    """A pipeline task's first two arguments are (processing_id, saga_run): bind them to its
    log lines and tag its transaction with them (Celery runs this inside the task's trace)."""
    token = None
    if task is not None and task.name.startswith("whatsapp.") and args and len(args) >= 2 and isinstance(args[0], str):
        token = log_context.bind(processing_id=args[0], saga_run=args[1])
        tracing.tag_task(processing_id=args[0])
    if task_id is not None:
        _running[task_id] = (time.perf_counter(), token)


@task_postrun.connect
def _task_ended(task_id: str | None = None, task=None, **_) -> None:
    started, token = _running.pop(task_id, (None, None)) if task_id is not None else (None, None)
    if started is not None and task is not None and task.name.startswith("whatsapp."):
        metrics.observe_stage(task.name.removeprefix("whatsapp."), time.perf_counter() - started)
    if token is not None:
        log_context.unbind(token)


@worker_process_shutdown.connect
def _worker_process_ended(pid: int | None = None, **_) -> None:
    import os

    metrics.mark_process_dead(pid or os.getpid())
