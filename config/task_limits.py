"""Every Celery task waits and runs for less than the broker's visibility timeout.

Redis does not know a task is being worked on: a message a worker has taken and not yet
acknowledged (acks_late: until the task returned) is handed to another worker once
CELERY_VISIBILITY_TIMEOUT has passed. A retry's countdown is spent holding its message
unacknowledged (the worker takes it at once and waits for its ETA), so a countdown, a soft
or a hard time limit at or above the visibility timeout runs the task twice at once.

So each task here has a hard and a soft time limit, and bounds every retry's countdown
(BoundedTask), and a Django system check (config.task_limits.E001, run by `manage.py check`,
migrate and every command; and at worker start, see config/celery.py) refuses any task whose
limits reach the visibility timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from celery import Celery, Task
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

# The setting each limit comes from, for the messages: what to change is what they name.
VISIBILITY = "CELERY_VISIBILITY_TIMEOUT"
SOFT = "TASK_SOFT_TIME_LIMIT_SECONDS"
HARD = "TASK_TIME_LIMIT_SECONDS"
COUNTDOWN = "TASK_MAX_RETRY_COUNTDOWN_SECONDS"


class BoundedTask(Task[Any, Any]):
    """A task whose retries never wait longer than `max_retry_countdown` seconds.

    The waits come from many places (backoff tables, a breaker's remaining open time, a
    server's Retry-After): clamping them here, where every retry passes (autoretry_for's
    too), bounds them all at once. A shorter wait than asked costs at most another refusal
    and another retry; a longer one than the visibility timeout costs a duplicate run."""

    abstract = True
    # None: no bound, which the system check refuses.
    max_retry_countdown: float | None = None

    def retry(
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: Any = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Any:
        countdown, eta = bounded_wait(self.max_retry_countdown, countdown, eta, self.default_retry_delay)
        return super().retry(
            args=args,
            kwargs=kwargs,
            exc=exc,
            throw=throw,
            eta=eta,
            countdown=countdown,
            max_retries=max_retries,
            **options,
        )


def bounded_wait(
    maximum: float | None, countdown: float | None, eta: datetime | None, default: float | None
) -> tuple[float | None, datetime | None]:
    """(countdown, eta) for a retry, never further away than `maximum` seconds: an eta
    becomes the countdown it stands for (naive: UTC, as Celery reads it), then is clamped."""
    if maximum is None:
        return countdown, eta
    if eta is not None:
        aware = eta if eta.tzinfo is not None else eta.replace(tzinfo=UTC)
        countdown = max((aware - datetime.now(UTC)).total_seconds(), 0.0)
    elif countdown is None:
        countdown = default or 0
    return min(float(countdown), maximum), None


def limit_problems(tasks: Iterable[Task[Any, Any]], *, visibility_timeout: float, conf: Mapping[str, Any]) -> list[str]:
    """What is wrong with each task's limits, one sentence each naming the setting to change.

    `conf` is Celery's configuration (task_soft_time_limit, task_time_limit: a task's own
    limits win over them, as in Celery)."""
    problems = []
    for task in sorted(tasks, key=lambda t: t.name):
        if task.name.startswith("celery."):  # Celery's own (chord_unlock, backend_cleanup...): not run here
            continue
        soft = task.soft_time_limit or conf.get("task_soft_time_limit")
        hard = task.time_limit or conf.get("task_time_limit")
        countdown = getattr(task, "max_retry_countdown", None)
        where = f"task {task.name}"
        if hard is None:
            problems.append(f"{where} has no hard time limit ({HARD}): it could run past {VISIBILITY}")
        elif hard >= visibility_timeout:
            problems.append(
                f"{where}: its hard time limit ({HARD}) of {hard:g} s must be below "
                f"{VISIBILITY} ({visibility_timeout:g} s)"
            )
        if soft is None:
            problems.append(f"{where} has no soft time limit ({SOFT})")
        elif soft >= visibility_timeout:
            problems.append(
                f"{where}: its soft time limit ({SOFT}) of {soft:g} s must be below "
                f"{VISIBILITY} ({visibility_timeout:g} s)"
            )
        elif hard is not None and soft >= hard:
            problems.append(f"{where}: its soft time limit ({SOFT}) must be below its hard one ({HARD})")
        if countdown is None:
            problems.append(
                f"{where} does not bound its retry countdowns ({COUNTDOWN}): "
                "give it base=config.task_limits.BoundedTask and a max_retry_countdown"
            )
        elif countdown >= visibility_timeout:
            problems.append(
                f"{where}: its longest retry countdown ({COUNTDOWN}) of {countdown:g} s must be below "
                f"{VISIBILITY} ({visibility_timeout:g} s)"
            )
    return problems


def app_problems(app: Celery) -> list[str]:
    """limit_problems for every task registered with `app`, against its broker's visibility timeout."""
    options = app.conf.broker_transport_options or {}
    visibility = options.get("visibility_timeout")
    if visibility is None:  # kombu's Redis default
        visibility = 3600
    return limit_problems(app.tasks.values(), visibility_timeout=float(visibility), conf=app.conf)


def system_check(app: Celery) -> Callable[..., list[checks.CheckMessage]]:
    """The Django system check for `app`'s tasks: one Error per problem (registered by
    whatsapp/apps.py, whose tasks they are)."""

    def check_task_limits(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
        return [
            checks.Error(problem, hint="Lower the task's limit or raise CELERY_VISIBILITY_TIMEOUT.", id="config.E001")
            for problem in app_problems(app)
        ]

    return check_task_limits


def refuse_bad_limits(app: Celery) -> None:
    """Raise ImproperlyConfigured listing every problem; for the worker's start, which runs
    Django's system checks but does not stop on their errors."""
    problems = app_problems(app)
    if problems:
        raise ImproperlyConfigured("; ".join(problems))
