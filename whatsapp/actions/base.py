"""What an action executor is.

Executors act; each owns one kind of business effect and how to undo it.
Every effect is keyed by (processing_id, saga run, action), so running an
executor twice for the same key changes nothing the second time: Celery may
redeliver a task, and the sweeper may re-drive a message.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from django.db import IntegrityError, connection, models, transaction

# The errors live in core (clients and breakers raise and read them); executors import them from here.
from core.errors import ActionError, PermanentActionError, RetryableActionError, is_retryable  # noqa: F401
from leads.models import Business, Lead
from whatsapp.contracts.result import AIResultEvent


@dataclass
class ActionContext:
    processing_id: str
    saga_run: int
    action: str
    step_order: int
    params: dict[str, Any]
    event: AIResultEvent
    business: Business
    lead: Lead

    @property
    def idempotency_key(self) -> str:
        return f"{self.processing_id}:{self.saga_run}:{self.step_order}:{self.action}"


class ActionExecutor(ABC):
    name: ClassVar[str]
    # The Celery queue its task runs on. An executor that calls a slow outside
    # service gets a queue of its own, so that service ties up only its workers.
    queue: ClassVar[str] = "pipeline"
    # Exceptions (besides RetryableActionError) that mean "try again later".
    retryable: ClassVar[tuple[type[BaseException], ...]] = ()
    # True: execute and compensate run inside the transaction that locks the saga step
    # and marks it SUCCEEDED (or COMPENSATED), so effect and step commit together.
    # False, for an executor that calls an outside service: they run with no transaction
    # open (a slow receiver must not hold row locks and a connection "idle in transaction"),
    # keep their own idempotency in their effect rows, and the step is marked afterwards.
    transactional: ClassVar[bool] = True

    @abstractmethod
    def execute(self, context: ActionContext) -> dict[str, Any]:
        """Do the effect (idempotently) and return a JSON-safe result for the saga row.
        Runs inside the transaction that marks the saga step SUCCEEDED, unless the
        executor is not `transactional`."""

    @abstractmethod
    def compensate(self, context: ActionContext, result: dict[str, Any]) -> dict[str, Any]:
        """Undo the effect (idempotently), given what execute returned."""

    def is_retryable(self, exc: BaseException) -> bool:
        return is_retryable(exc, self.retryable)


def atomic_if_nested() -> contextlib.AbstractContextManager:
    """A savepoint inside a transaction, nothing outside one: there a single statement
    commits by itself, and BEGIN/COMMIT around it would be two more round trips."""
    return transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()


M = TypeVar("M", bound=models.Model)


def create_effect(model: type[M], context: ActionContext, **fields: Any) -> M:
    """Create this step's effect row, or return the one a concurrent run of the same step
    created first: the unique idempotency_key decides the winner.

    Inside a transaction (the saga's step) a lost race raises IntegrityError, which rolls
    the step back; the saga then finds the step done by the winner. A savepoint here would
    cost two more statements on every action for a race that almost never happens."""
    try:
        return model._default_manager.create(
            processing_id=context.processing_id,
            saga_run=context.saga_run,
            idempotency_key=context.idempotency_key,
            business=context.business,
            lead=context.lead,
            **fields,
        )
    except IntegrityError:
        if connection.in_atomic_block:
            raise
        existing = model._default_manager.filter(idempotency_key=context.idempotency_key).first()
        if existing is None:
            raise
        return existing
