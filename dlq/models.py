"""Dead letters: what could not be processed, kept whole so it can be requeued."""
from __future__ import annotations

from django.db import models


class DeadLetter(models.Model):
    class Status(models.TextChoices):
        OPEN = "OPEN"
        REQUEUED = "REQUEUED"
        RESOLVED = "RESOLVED"
        DISCARDED = "DISCARDED"

    class Stage(models.TextChoices):
        INGEST = "ingest"

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
    resolution_note = models.TextField(blank=True)
    previous = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="followups",
        help_text="The earlier entry for the same message, when a requeue failed again.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "dead letter"
        ordering = ["-created_at"]
        permissions = [("requeue_deadletter", "Can requeue dead letters")]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="dlq_status_created"),
            models.Index(fields=["reason", "status"], name="dlq_reason_status"),
            models.Index(fields=["stage", "status"], name="dlq_stage_status"),
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
