"""Building the pipeline's Celery chains: which tasks, in what order, with which ids,
queues and priorities. Tasks are named, not imported (whatsapp.tasks registers them
when the app starts), so ingest, requeue and the sweeper build chains without
importing the task bodies, and the task bodies build the next chain without a cycle.

Task ids are "<processing_id>:<run>:<step>", deterministic per message, run and step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from celery import chain

from config.celery import app
from whatsapp.actions.registry import executors
from whatsapp.models import SagaStep
from whatsapp.pipeline.lanes import NEW_MESSAGE, NORMAL_LANE

if TYPE_CHECKING:
    from celery.canvas import Signature

DEDUPE = "whatsapp.dedupe"
INTENT = "whatsapp.intent"
EXECUTE_ACTION = "whatsapp.execute_action"
# The run's tail, one task: mark read (best effort), the reply, finish (whatsapp.tasks.reply_and_finish).
REPLY_AND_FINISH = "whatsapp.reply_and_finish"
COMPENSATE = "whatsapp.compensate"
# The tail task's step in its id ("<processing_id>:<run>:reply-finish").
TAIL_STEP = "reply-finish"
# Replies have a queue of their own, so a slow Cloud API ties up only its workers.
REPLY_QUEUE = "whatsapp"


def task_id(processing_id: str, saga_run: int, step: str) -> str:
    return f"{processing_id}:{saga_run}:{step}"


def _task(name: str, processing_id: str, saga_run: int, *args: int) -> Signature:
    """An immutable signature of a pipeline task (it takes ids only, never a result)."""
    return app.signature(name, args=(processing_id, saga_run, *args), immutable=True)


def pipeline_steps(processing_id: str, saga_run: int, *, lane: int = NORMAL_LANE) -> list[Signature]:
    """dedupe then intent; intent extends the chain with the planned actions.
    Every task of the chain runs on the message's lane (whatsapp.pipeline.lanes),
    the first behind the lane's messages already under way.

    The chain as its list of tasks: whatsapp.pipeline.hand_off sends it from the list,
    since building a Celery chain object costs more than sending it."""
    return [
        _task(DEDUPE, processing_id, saga_run).set(
            task_id=task_id(processing_id, saga_run, "dedupe"), priority=lane + NEW_MESSAGE
        ),
        _task(INTENT, processing_id, saga_run).set(task_id=task_id(processing_id, saga_run, "intent"), priority=lane),
    ]


def pipeline_signature(processing_id: str, saga_run: int, *, lane: int = NORMAL_LANE) -> Signature:
    """The pipeline_steps as one chain."""
    return chain(*pipeline_steps(processing_id, saga_run, lane=lane))


def actions_signature(
    processing_id: str, saga_run: int, steps: Iterable[SagaStep], *, lane: int = NORMAL_LANE
) -> Signature:
    """The planned actions in order, each on its executor's queue, then the run's tail: one
    task on the reply queue that marks the message read, sends the reply and finishes.

    Each action carries the run's compensation as its errback (link_error): an action that
    fails, for good or by a bug, ends its task as FAILURE once the failure is in Postgres,
    and Celery then sends the compensate task. Set on each action, not on the chain, so it
    is the failing action's own errback whichever one fails. Celery runs no errback for a
    worker killed mid-task (the task is redelivered instead), nor when the broker is gone:
    the sweeper starts the compensation of a failed run left PROCESSING."""
    rest = []
    for step in steps:
        action = _task(EXECUTE_ACTION, processing_id, saga_run, step.order).set(
            task_id=task_id(processing_id, saga_run, f"action{step.order}-{step.action}"),
            queue=executors.get(step.action).queue,
            priority=lane,
        )
        action.link_error(compensation_signature(processing_id, saga_run))
        rest.append(action)
    rest.append(tail_signature(processing_id, saga_run, lane=lane))
    return chain(*rest)


def tail_signature(processing_id: str, saga_run: int, *, lane: int = NORMAL_LANE, mark_read: bool = True) -> Signature:
    """The run's tail as one task on the reply queue (a slow Cloud API ties up only its
    workers): the read receipt's first try, the reply, then finish. One task, not three,
    because each task costs a publish, a delivery, an ack and a read of the inbox row."""
    return app.signature(
        REPLY_AND_FINISH,
        args=(processing_id, saga_run),
        kwargs={} if mark_read else {"mark_read": False},
        immutable=True,
    ).set(task_id=task_id(processing_id, saga_run, TAIL_STEP), queue=REPLY_QUEUE, priority=lane)


def reply_signature(processing_id: str, saga_run: int) -> Signature:
    """For requeueing a failed reply: send it again, then finish, in the same task as a
    run's tail. The message was marked read when the reply first went (or failed)."""
    return tail_signature(processing_id, saga_run, mark_read=False)


def resume_signature(processing_id: str, saga_run: int, *, planned: bool) -> Signature:
    """For the sweeper: carry on a PROCESSING message from its saga rows: the actions not yet
    succeeded (a succeeded one would be a no-op, at the cost of a task), then the tail. A
    message whose actions are all done, stuck in its tail, gets the tail task alone, which
    sends no reply already sent and finishes once."""
    if not planned:
        return _task(INTENT, processing_id, saga_run).set(task_id=task_id(processing_id, saga_run, "intent"))
    steps = (
        SagaStep.objects.filter(message__processing_id=processing_id, saga_run=saga_run)
        .exclude(status=SagaStep.Status.SUCCEEDED)
        .order_by("order")
    )
    return actions_signature(processing_id, saga_run, list(steps))


def compensation_signature(processing_id: str, saga_run: int) -> Signature:
    """The run's compensate task: it undoes what a failed run did, then dead-letters it.
    Immutable, so that as an errback it ignores the failed task's id Celery passes."""
    return _task(COMPENSATE, processing_id, saga_run).set(task_id=task_id(processing_id, saga_run, "compensate"))


def start_compensation(processing_id: str, saga_run: int, countdown: float = 0) -> None:
    """Send the run's compensate task now (intent's failure, the sweeper)."""
    compensation_signature(processing_id, saga_run).apply_async(countdown=countdown)
