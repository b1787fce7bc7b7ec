"""The saga's rows: one per planned action of one run of one message."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.db import models

from whatsapp.models.inbox import ProcessedMessage, row_columns


class SagaStepQuerySet(models.QuerySet["SagaStep"]):
    def begin_attempt(self, processing_id: str, saga_run: int, order: int, now: datetime) -> SagaStep | None:
        """Count a new attempt of a PENDING step of an active run, committed at once (so a
        failure's rollback, or a killed worker, keeps it), and return the step, with its
        inbox row (its lead and its business's version, as InboxQuerySet.row reads it)
        as `step.message`; None when the step is not PENDING or the run not active (the
        caller asks why).

        One statement, because every action runs it: it checks the run, counts the
        attempt, logs when it started, reads the step and reads the row the executor
        needs, where five statements and a transaction did before."""
        rows = list(
            ProcessedMessage.objects.raw(
                f"""
                WITH s AS (
                    UPDATE whatsapp_sagastep s
                    SET attempts = s.attempts + 1, updated_at = %(now)s,
                        attempt_log = s.attempt_log || jsonb_build_array(
                            jsonb_build_object('attempt', s.attempts + 1, 'at', %(at)s::text))
                    FROM whatsapp_processedmessage m
                    WHERE m.processing_id = %(pid)s AND m.saga_run = %(run)s AND m.status = 'PROCESSING'
                      AND s.message_id = m.id AND s.saga_run = m.saga_run AND s."order" = %(order)s
                      AND s.status = 'PENDING'
                    RETURNING s.id AS step_id, s.message_id AS step_message_id, s.action AS step_action,
                              s.params AS step_params, s.attempts AS step_attempts
                )
                SELECT {row_columns()}, s.step_id, s.step_action, s.step_params, s.step_attempts
                FROM s JOIN whatsapp_processedmessage m ON m.id = s.step_message_id
                LEFT JOIN leads_lead l ON l.id = m.lead_record_id
                """,
                {"now": now, "at": now.isoformat(), "pid": processing_id, "run": saga_run, "order": order},
            )
        )
        if not rows:
            return None
        message = ProcessedMessage.objects.with_lead(rows[0])
        # The step's columns, which raw() put on the row as attributes.
        found: dict[str, Any] = vars(message)
        params = found["step_params"]
        step = SagaStep(
            pk=found["step_id"],
            message_id=message.pk,
            saga_run=saga_run,
            order=order,
            action=found["step_action"],
            params=json.loads(params) if isinstance(params, str) else params,
            attempts=found["step_attempts"],
            status=SagaStep.Status.PENDING,
        )
        step.message = message
        return step


class SagaStep(models.Model):
    """One planned action of one saga run. Its status is written in the same
    transaction as the executor's effect, so it never claims what did not happen."""

    class Status(models.TextChoices):
        PENDING = "PENDING"
        SUCCEEDED = "SUCCEEDED"
        FAILED = "FAILED"
        COMPENSATED = "COMPENSATED"
        COMPENSATION_FAILED = "COMPENSATION_FAILED"

    message = models.ForeignKey(ProcessedMessage, on_delete=models.CASCADE, related_name="saga_steps")
    saga_run = models.PositiveIntegerField()
    order = models.PositiveSmallIntegerField()
    action = models.CharField(max_length=64, db_index=True)
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    attempt_log = models.JSONField(default=list, blank=True, help_text="When each attempt started and how it ended.")
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    compensation_attempts = models.PositiveIntegerField(default=0)
    compensation_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SagaStepQuerySet.as_manager()

    class Meta:
        ordering = ["message", "saga_run", "order"]
        constraints = [
            models.UniqueConstraint(fields=["message", "saga_run", "order"], name="saga_step_unique_order"),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} run {self.saga_run} #{self.order} {self.action} {self.status}"

    def as_state(self) -> dict:
        """The step as the DLQ entry keeps it."""
        return {
            "order": self.order,
            "action": self.action,
            "status": self.status,
            "attempts": self.attempts,
            "compensation_attempts": self.compensation_attempts,
            "result": self.result,
            "error": self.error,
            "compensation_error": self.compensation_error,
        }
