"""The saga of one message, kept in Postgres, one module per stage.

Celery delivers the tasks (whatsapp.tasks); these modules decide what they do,
reading and writing only Postgres, so that a redelivered task, a re-driven
message or a compensation that runs twice always finds the true state and acts
at most once:

- run: the run's inbox row, whether it is still this run's, and recording its failure;
- plan: dedupe's claim, then the tenant, the lead, the handler and the plan;
- steps: one planned action;
- compensation: undoing a failed run's succeeded actions, in reverse;
- dead_letter: the failed run's DLQ entry;
- read: the read receipt's first try, best effort, before the reply;
- reply: the reply to the customer, the last step since it cannot be undone;
- finish: the message processed.

read, reply and finish are one task, the run's tail (whatsapp.tasks.reply_and_finish).
"""

from whatsapp.saga.compensation import compensate_steps
from whatsapp.saga.dead_letter import write_dead_letter
from whatsapp.saga.finish import finish_run
from whatsapp.saga.plan import claim, plan_run
from whatsapp.saga.read import mark_read
from whatsapp.saga.reply import send_reply
from whatsapp.saga.run import (
    RETRY_DELAYS,
    MessagePurged,
    PermanentStageError,
    SagaStopped,
    StageFailed,
    StepOutcome,
    active_message,
    describe_failure,
    fail,
    load_event,
    reason_for,
    upsert_lead,
)
from whatsapp.saga.steps import run_step

__all__ = [
    "RETRY_DELAYS",
    "MessagePurged",
    "PermanentStageError",
    "SagaStopped",
    "StageFailed",
    "StepOutcome",
    "active_message",
    "claim",
    "compensate_steps",
    "describe_failure",
    "fail",
    "finish_run",
    "load_event",
    "mark_read",
    "plan_run",
    "reason_for",
    "run_step",
    "send_reply",
    "upsert_lead",
    "write_dead_letter",
]
