"""Dead letters: what could not be processed, kept whole so it can be requeued."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Any, Protocol

from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone


class KafkaRecord(Protocol):
    """What an ingest dead letter keeps of the record it could not take in (read-only, as
    the frozen whatsapp.kafka.Record has it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def timestamp(self) -> datetime | None: ...
    @property
    def unconverted_millis(self) -> int | None: ...
    def headers_json(self) -> list[dict[str, Any]]: ...


class EntryNotOpen(Exception):
    """The entry was already requeued, resolved or discarded; the message says which."""


class DeadLetterQuerySet(models.QuerySet["DeadLetter"]):
    """The filters the admin and `manage.py dlq` share, so both select the same entries."""

    def matching(
        self,
        *,
        status: str | None = None,
        stage: str | None = None,
        reason: str | None = None,
        business: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        search: str | None = None,
    ) -> DeadLetterQuerySet:
        qs = self
        for field, value in (("status", status), ("stage", stage), ("reason", reason), ("business_id", business)):
            if value:
                qs = qs.filter(**{field: value})
        if since is not None:
            qs = qs.filter(created_at__gte=since)
        if until is not None:
            qs = qs.filter(created_at__lt=until)
        if search:
            # The admin's search fields: ids exactly or in part, and the error text.
            qs = qs.filter(
                Q(processing_id__icontains=search)
                | Q(lead_id__icontains=search)
                | Q(error_message__icontains=search)
                | Q(error_class__icontains=search)
            )
        return qs

    def open_for_run(self, processing_id: str, saga_run: int) -> DeadLetter | None:
        """The run's open pipeline entry, if it has one (at most one: dlq_pipeline_unique_open_run)."""
        return (
            self.filter(processing_id=processing_id, saga_run=saga_run, status=DeadLetter.Status.OPEN)
            .exclude(stage=DeadLetter.Stage.INGEST)
            .first()
        )

    def purgeable(self, older_than_days: float, *, include_open: bool = False) -> DeadLetterQuerySet:
        """Entries created more than `older_than_days` ago; OPEN ones only with include_open,
        since an open entry is a message nobody has dealt with yet."""
        qs = self.filter(created_at__lt=timezone.now() - timedelta(days=older_than_days))
        return qs if include_open else qs.exclude(status=DeadLetter.Status.OPEN)


class DeadLetter(models.Model):
    class Status(models.TextChoices):
        OPEN = "OPEN"
        REQUEUED = "REQUEUED"
        RESOLVED = "RESOLVED"
        DISCARDED = "DISCARDED"

    class Stage(models.TextChoices):
        """Where the message failed. An action that failed for good is its own stage,
        named by the action (CREATE_ORDER, ...); the others are these."""

        INGEST = "ingest"
        INTENT = "intent"
        REPLY = "reply"
        PIPELINE = "pipeline"

    class Reason(models.TextChoices):
        """Why a pipeline stage failed for good (ingest's reasons are the intake's own)."""

        RETRIES_EXHAUSTED = "retries_exhausted"
        NON_RETRYABLE = "non_retryable"
        # An error nobody raised on purpose (a bug): not worth a retry either, but told apart.
        UNEXPECTED_ERROR = "unexpected_error"
        # Meta accepted the reply, then reported it could not be delivered (a failed status).
        DELIVERY_FAILED = "delivery_failed"
        # Meta refused the template message sent outside the 24-hour window (a 132xxx code,
        # in the error): fix the template, then requeue.
        TEMPLATE_ERROR = "template_error"

    # The raw record, byte for byte, even when it is not UTF-8.
    raw_value = models.BinaryField(null=True, blank=True)
    payload = models.JSONField(null=True, blank=True, help_text="The validated event, when it was valid.")
    processing_id = models.CharField(max_length=128, blank=True, db_index=True)
    business_id = models.CharField(max_length=64, blank=True, db_index=True)
    lead_id = models.CharField(max_length=64, blank=True, db_index=True)
    kafka_topic = models.CharField(max_length=249, blank=True)
    kafka_partition = models.IntegerField(null=True, blank=True)
    kafka_offset = models.BigIntegerField(null=True, blank=True)
    kafka_timestamp = models.DateTimeField(null=True, blank=True)
    kafka_timestamp_ms = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="The record's timestamp in raw milliseconds, kept when it is no date a datetime can hold "
        "(before 1970, past the year 9999).",
    )
    kafka_key = models.BinaryField(null=True, blank=True)
    kafka_headers = models.JSONField(default=list, blank=True)
    stage = models.CharField(max_length=64, db_index=True)
    reason = models.CharField(max_length=64, db_index=True)
    error_class = models.CharField(max_length=200, blank=True)
    error_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    saga_run = models.PositiveIntegerField(null=True, blank=True)
    saga_state = models.JSONField(null=True, blank=True)
    trace_id = models.CharField(max_length=32, blank=True, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    requeue_count = models.PositiveIntegerField(default=0)
    requeue_history = models.JSONField(default=list, blank=True)
    resolution_note = models.TextField(blank=True, help_text="Why it was resolved or discarded.")
    closed_by = models.CharField(max_length=150, blank=True, help_text="Who resolved or discarded it.")
    closed_at = models.DateTimeField(null=True, blank=True)
    previous = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="followups",
        help_text="The earlier entry for the same message, when a requeue failed again.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DeadLetterQuerySet.as_manager()

    class Meta:
        verbose_name = "dead letter"
        ordering = ["-created_at"]
        permissions = [("requeue_deadletter", "Can requeue dead letters")]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="dlq_status_created"),
            models.Index(fields=["reason", "status"], name="dlq_reason_status"),
            models.Index(fields=["stage", "status"], name="dlq_stage_status"),
            # Dead letters written per minute, whatever their status (the admin overview).
            models.Index(fields=["created_at"], name="dlq_created"),
        ]
        constraints = [
            # Ingest may read the same record again after a crash; it must not
            # dead-letter it twice.
            models.UniqueConstraint(
                fields=["kafka_topic", "kafka_partition", "kafka_offset"],
                condition=models.Q(stage="ingest"),
                name="dlq_ingest_unique_coords",
            ),
            # A message has at most one open pipeline entry per saga run.
            models.UniqueConstraint(
                fields=["processing_id", "saga_run"],
                condition=models.Q(status="OPEN") & ~models.Q(stage="ingest"),
                name="dlq_pipeline_unique_open_run",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.stage}/{self.reason} {self.processing_id or ''}".strip()

    @classmethod
    def for_ingest(
        cls,
        record: KafkaRecord,
        *,
        reason: str,
        error_class: str,
        error_message: str,
        traceback: str,
        trace_id: str,
        payload: dict | None = None,
        processing_id: str = "",
        business_id: str = "",
        lead_id: str = "",
    ) -> DeadLetter:
        """The (unsaved) entry for a record ingest could not take in: the record whole, byte for
        byte, so a requeue can take it in again. Unsaved, as ingest stores a batch's in one insert."""
        return cls(
            raw_value=record.value,
            payload=payload,
            processing_id=processing_id,
            business_id=business_id,
            lead_id=lead_id,
            kafka_topic=record.topic,
            kafka_partition=record.partition,
            kafka_offset=record.offset,
            kafka_timestamp=record.timestamp,
            kafka_timestamp_ms=record.unconverted_millis,
            kafka_key=record.key,
            kafka_headers=record.headers_json(),
            stage=cls.Stage.INGEST,
            reason=reason,
            error_class=error_class[:200],
            error_message=error_message,
            traceback=traceback,
            trace_id=trace_id,
        )

    @classmethod
    def for_run(
        cls, *, processing_id: str, saga_run: int, stage: str, reason: str, error: str, traceback: str, **fields: Any
    ) -> DeadLetter:
        """Write a failed pipeline run's entry, linked to the entry an earlier requeue of the
        message closed (`previous`). The caller holds the message locked and has checked the
        run has no open entry yet (DeadLetterQuerySet.open_for_run). `fields` are the
        message's other columns."""
        previous = (
            cls.objects.filter(processing_id=processing_id, status=cls.Status.REQUEUED).order_by("-created_at").first()
        )
        return cls.objects.create(
            processing_id=processing_id,
            saga_run=saga_run,
            stage=stage or cls.Stage.PIPELINE,
            reason=reason or cls.Reason.NON_RETRYABLE,
            error_class=(error.split(":", 1)[0] if error else ""),
            error_message=error,
            traceback=traceback,
            previous=previous,
            **fields,
        )

    def mark_requeued(self, *, by: str, saga_run: int | None, at: datetime | None = None) -> None:
        """The entry's message was sent through again (a requeue, a forced replay), as run `saga_run`."""
        at = at or timezone.now()
        self.status = self.Status.REQUEUED
        self.requeue_count += 1
        self.requeue_history = [*self.requeue_history, {"by": by, "at": at.isoformat(), "saga_run": saga_run}]
        self.save(update_fields=["status", "requeue_count", "requeue_history", "updated_at"])

    def resolve(self, note: str, *, by: str) -> None:
        """Close the entry as dealt with by hand (say, the order was entered in the CRM)."""
        self._close(self.Status.RESOLVED, note, by)

    def discard(self, reason: str, *, by: str) -> None:
        """Close the entry as not worth processing (say, a test message)."""
        self._close(self.Status.DISCARDED, reason, by)

    def _close(self, status: str, note: str, by: str) -> None:
        note = (note or "").strip()
        if not note:
            raise ValueError("a note saying why is required")
        with transaction.atomic():
            # Locked like requeue() locks it, so a concurrent requeue and resolve cannot both win.
            current = DeadLetter.objects.select_for_update().get(pk=self.pk)
            if current.status != self.Status.OPEN:
                self.status = current.status
                raise EntryNotOpen(
                    f"dead letter #{self.pk} is {current.status}, only OPEN entries can be "
                    f"{'resolved' if status == self.Status.RESOLVED else 'discarded'}"
                )
            self.status, self.resolution_note, self.closed_by, self.closed_at = status, note, by, timezone.now()
            self.save(update_fields=["status", "resolution_note", "closed_by", "closed_at", "updated_at"])

    def as_summary(self) -> dict[str, Any]:
        """The fields `dlq list --json` gives: enough to pick entries, none of the raw bytes."""
        return {
            "id": self.pk,
            "status": self.status,
            "stage": self.stage,
            "reason": self.reason,
            "processing_id": self.processing_id,
            "business_id": self.business_id,
            "lead_id": self.lead_id,
            "error_class": self.error_class,
            "error_message": self.error_message,
            "attempts": self.attempts,
            "requeue_count": self.requeue_count,
            "trace_id": self.trace_id,
            "created_at": _iso(self.created_at),
        }

    def as_json(self) -> dict[str, Any]:
        """Every field `dlq show --json` gives (raw bytes as UTF-8 text, else base64)."""
        return {
            **self.as_summary(),
            "payload": self.payload,
            "raw_value": _bytes_json(self.raw_value),
            "traceback": self.traceback,
            "saga_run": self.saga_run,
            "saga_state": self.saga_state,
            "kafka": {
                "topic": self.kafka_topic,
                "partition": self.kafka_partition,
                "offset": self.kafka_offset,
                "timestamp": _iso(self.kafka_timestamp),
                "key": _bytes_json(self.kafka_key),
                "headers": self.kafka_headers,
            }
            if self.kafka_topic
            else {},
            "requeue_history": self.requeue_history,
            "resolution_note": self.resolution_note,
            "closed_by": self.closed_by,
            "closed_at": _iso(self.closed_at),
            "previous_id": self.previous_id,
            "updated_at": _iso(self.updated_at),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _bytes_json(value: Any) -> dict | None:
    if value is None:
        return None
    raw = bytes(value)
    try:
        return {"encoding": "utf-8", "data": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"encoding": "base64", "data": base64.b64encode(raw).decode("ascii")}
