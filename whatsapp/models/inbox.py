"""The inbox: one row per analysed message taken in from Kafka, and the duplicates counted."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, cast

from django.db import connection, models
from django.utils import timezone

from config.redaction import configured_secrets, redact
from leads.models import Lead


class InboxQuerySet(models.QuerySet["ProcessedMessage"]):
    def row(
        self, *, processing_id: str | None = None, pk: int | None = None, lock: bool = False
    ) -> ProcessedMessage | None:
        """The inbox row by processing_id or pk, with its lead and its business's updated_at
        (`business_version`, which the per-process business cache checks: leads.directory),
        in one SELECT; FOR UPDATE of the row with `lock`.

        Written as SQL because every task reads its row: the ORM built this query (a join,
        a subquery, fifty columns) afresh each time, at more CPU than the query itself."""
        by, value = ("processing_id", processing_id) if processing_id is not None else ("id", pk)
        rows = list(self.raw(_row_sql(by, lock), [value]))
        return self.with_lead(rows[0]) if rows else None

    def with_lead(self, message: ProcessedMessage) -> ProcessedMessage:
        """A row read with ROW_COLUMNS, its lead's columns made into its lead."""
        if message.lead_record_id is not None:
            message.lead_record = Lead.from_db(
                self.db,
                [f.attname for f in _lead_fields()],
                [getattr(message, f"lead__{f.column}") for f in _lead_fields()],
            )
        return message

    def claim(self, processing_id: str, saga_run: int, now: datetime) -> ProcessedMessage | None:
        """RECEIVED -> PROCESSING in one statement; the claimed row (its ids and intent), or
        None when the run is not there to claim (a duplicate copy, already claimed, finished
        or purged). One UPDATE ... RETURNING: dedupe runs for every message."""
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE whatsapp_processedmessage SET status = 'PROCESSING', started_at = %s, updated_at = %s, "
                "attempts = attempts + 1 WHERE processing_id = %s AND saga_run = %s AND status = 'RECEIVED' "
                "RETURNING id, lead_id, intent",
                [now, now, processing_id, saga_run],
            )
            row = cursor.fetchone()
        if row is None:
            return None
        return ProcessedMessage(
            pk=row[0],
            processing_id=processing_id,
            saga_run=saga_run,
            lead_id=row[1],
            intent=row[2],
            status=ProcessedMessage.Status.PROCESSING,
        )

    def finish_run(self, processing_id: str, saga_run: int, now: datetime) -> dict[str, Any] | None:
        """PROCESSING -> PROCESSED, with the lead's "message_processed" activity, in one
        statement; None when the run is not finishable as it stands (stopped, failed, purged,
        or a step not SUCCEEDED: the caller asks why). One statement because finish runs for
        every message, and the update and the activity must commit together."""
        with connection.cursor() as cursor:
            cursor.execute(
                """
                WITH done AS (
                    UPDATE whatsapp_processedmessage m
                    SET status = 'PROCESSED', finished_at = %(now)s, updated_at = %(now)s
                    WHERE m.processing_id = %(pid)s AND m.saga_run = %(run)s AND m.status = 'PROCESSING'
                      AND m.failed_stage = ''
                      AND NOT EXISTS (SELECT 1 FROM whatsapp_sagastep s WHERE s.message_id = m.id
                                      AND s.saga_run = m.saga_run AND s.status <> 'SUCCEEDED')
                    RETURNING m.id, m.handler, m.reply_text <> '' AS replied, m.intent, m.kafka_timestamp,
                              m.received_at, m.lead_id, m.business_id,
                              -- rows planned before inbox rows knew their lead find it by its ids
                              coalesce(m.lead_record_id, (
                                  SELECT l.id FROM leads_lead l JOIN leads_business b ON b.id = l.business_id
                                  WHERE b.business_id = m.business_id AND l.lead_id = m.lead_id)) AS lead
                ), activity AS (
                    INSERT INTO leads_leadactivity (lead_id, kind, processing_id, from_state, to_state, detail,
                                                    created_at)
                    SELECT done.lead, 'message_processed', %(pid)s, '', '',
                           jsonb_build_object(
                               'saga_run', %(run)s, 'handler', done.handler, 'reply', done.replied,
                               'actions', (SELECT coalesce(jsonb_agg(s.action ORDER BY s."order"), '[]'::jsonb)
                                           FROM whatsapp_sagastep s
                                           WHERE s.message_id = done.id AND s.saga_run = %(run)s)),
                           %(now)s
                    FROM done WHERE done.lead IS NOT NULL
                ), released AS (
                    -- The conversation's turn, when nothing waits behind it (whatsapp.models.turns):
                    -- a queued message raises `waiting` under the turn's lock, which this waits for.
                    DELETE FROM whatsapp_conversationturn t USING done
                    WHERE t.business_id = done.business_id AND t.lead_id = done.lead_id
                      AND t.processing_id = %(pid)s AND t.saga_run = %(run)s AND t.waiting = 0
                    RETURNING t.id
                )
                SELECT intent, kafka_timestamp, received_at, lead_id, business_id,
                       EXISTS (SELECT 1 FROM released) FROM done
                """,
                {"now": now, "pid": processing_id, "run": saga_run},
            )
            row = cursor.fetchone()
        if row is None:
            return None
        return {
            "intent": row[0],
            "kafka_timestamp": row[1],
            "received_at": row[2],
            "lead_id": row[3],
            "business_id": row[4],
            # False: the turn was not this run's to drop, or a message waits for it.
            "turn_released": row[5],
            "finished_at": now,
        }


@functools.cache
def _lead_fields() -> list[models.Field]:
    return list(Lead._meta.concrete_fields)


def _columns(model: type[models.Model]) -> list[str]:
    """The model's columns, in field order (a concrete field always has one; the stubs allow None)."""
    return [cast(str, f.column) for f in model._meta.concrete_fields]


@functools.cache
def row_columns() -> str:
    """What InboxQuerySet.row selects, from `m` (the inbox row) and `l` (its lead, LEFT
    JOINed): every column of both, and the business's version. Built once, from the
    models' own columns; read back with InboxQuerySet.with_lead."""
    quote = connection.ops.quote_name
    columns = [f"m.{quote(column)}" for column in _columns(ProcessedMessage)]
    columns += [f"l.{quote(column)} AS {quote('lead__' + column)}" for column in _columns(Lead)]
    return (
        f"{', '.join(columns)}, (SELECT b.updated_at FROM leads_business b "
        f"WHERE b.business_id = m.business_id) AS business_version"
    )


@functools.cache
def _row_sql(by: str, lock: bool) -> str:
    """InboxQuerySet.row's statement, built once per shape."""
    return (
        f"SELECT {row_columns()} "
        f"FROM whatsapp_processedmessage m LEFT JOIN leads_lead l ON l.id = m.lead_record_id "
        f"WHERE m.{connection.ops.quote_name(by)} = %s" + (" FOR UPDATE OF m" if lock else "")
    )


class ProcessedMessage(models.Model):
    """The inbox row. Its unique processing_id is the dedupe key, and its
    status is the source of truth the sweeper re-drives from."""

    class Status(models.TextChoices):
        RECEIVED = "RECEIVED"
        # Taken in, behind another message of the same conversation (whatsapp.models.turns).
        WAITING = "WAITING"
        PROCESSING = "PROCESSING"
        PROCESSED = "PROCESSED"
        FAILED = "FAILED"

    # Taken in and not finished: running, or waiting for it.
    IN_FLIGHT = (Status.RECEIVED, Status.WAITING, Status.PROCESSING)

    processing_id = models.CharField(max_length=128, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    business_id = models.CharField(max_length=64, db_index=True)
    lead_id = models.CharField(max_length=64, db_index=True)
    intent = models.CharField(max_length=32, db_index=True)
    payload = models.JSONField(help_text="The validated event.")
    sent_at = models.DateTimeField(
        null=True, blank=True, help_text="When the customer sent it (Meta's timestamp): the conversation's order."
    )
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
    trace_id = models.CharField(max_length=32, blank=True, db_index=True)
    saga_run = models.PositiveIntegerField(default=1)
    attempts = models.PositiveIntegerField(default=0)
    handler = models.CharField(max_length=64, blank=True)
    planned_run = models.PositiveIntegerField(null=True, blank=True, help_text="The saga run whose plan is written.")
    reply_text = models.TextField(blank=True)
    # What the reply says (whatsapp.models.templates.ReplyKind) and the fields it was made of,
    # with its language: what a template needs once the 24-hour window has closed.
    reply_kind = models.CharField(max_length=32, blank=True, default="", db_default="")
    reply_fields = models.JSONField(null=True, blank=True)
    failed_stage = models.CharField(max_length=64, blank=True)
    failure_reason = models.CharField(max_length=64, blank=True)
    last_error = models.TextField(blank=True)
    last_traceback = models.TextField(blank=True)
    lead_record = models.ForeignKey(
        "leads.Lead",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="inbox_messages",
        verbose_name="lead",
        help_text="The lead, once the intent stage has created or updated it.",
    )
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = InboxQuerySet.as_manager()

    class Meta:
        verbose_name = "inbox message"
        ordering = ["-received_at"]
        # /metrics names businesses, breakers and queues: staff see it only with this
        # (settings.METRICS_PERMISSION), the scraper with METRICS_TOKEN.
        permissions = [("view_metrics", "Can read /metrics")]
        indexes = [
            models.Index(fields=["status", "updated_at"], name="inbox_status_updated"),
            models.Index(fields=["kafka_topic", "kafka_partition", "kafka_offset"], name="inbox_kafka_coords"),
            # The admin overview's messages per minute and latency over the last hour.
            models.Index(fields=["finished_at"], name="inbox_finished", condition=models.Q(finished_at__isnull=False)),
            # A conversation's queued messages, in the order they run (whatsapp.pipeline.turns).
            models.Index(
                fields=["business_id", "lead_id", "sent_at", "kafka_offset"],
                name="inbox_waiting",
                condition=models.Q(status="WAITING"),
            ),
        ]

    def __str__(self) -> str:
        return self.processing_id

    @classmethod
    def claim(cls, processing_id: str, saga_run: int) -> ProcessedMessage | None:
        """RECEIVED -> PROCESSING, in one statement (InboxQuerySet.claim); the claimed row,
        or None when the run is not there to claim."""
        return cls.objects.claim(processing_id, saga_run, timezone.now())

    @classmethod
    def finish(cls, processing_id: str, saga_run: int) -> dict[str, Any] | None:
        """PROCESSING -> PROCESSED with the lead's activity, in one statement
        (InboxQuerySet.finish_run); None when the run is not finishable as it stands."""
        return cls.objects.finish_run(processing_id, saga_run, timezone.now())

    def fail(self, *, stage: str, reason: str, error: str, tb: str) -> None:
        """Record why the run failed (the caller holds the row locked and has checked it is
        the active run with no failure yet). Whoever passed them, error and traceback are
        stored only without URLs' secrets and known secret values."""
        secrets = configured_secrets()
        self.failed_stage = stage
        self.failure_reason = reason
        self.last_error = redact(error, secrets)[:4000]
        self.last_traceback = redact(tb, secrets)
        self.save(update_fields=["failed_stage", "failure_reason", "last_error", "last_traceback", "updated_at"])

    def mark_dead_lettered(self) -> None:
        """The failed run's dead letter is written: the message is FAILED, and done."""
        self.status = self.Status.FAILED
        self.finished_at = timezone.now()
        self.save(update_fields=["status", "finished_at", "updated_at"])

    def reopen_for_reply(self) -> None:
        """A dead-lettered reply is sent again in the same run (the actions stand):
        FAILED -> PROCESSING, the failure forgotten."""
        self.status = self.Status.PROCESSING
        self.failed_stage = self.failure_reason = self.last_error = self.last_traceback = ""
        self.finished_at = None
        self.save()

    def start_new_run(self) -> None:
        """Make the message ready for its next saga run (the caller hands it to
        the pipeline once this is committed). Executors key their effects by
        run, so what an earlier run did (or compensated) is done once more, and
        nothing twice within one run."""
        self.saga_run += 1
        self.status = self.Status.RECEIVED
        self.failed_stage = self.failure_reason = self.last_error = self.last_traceback = ""
        self.started_at = self.finished_at = None
        self.save()


class DuplicateDelivery(models.Model):
    """A record whose processing_id was already taken in, at other Kafka
    coordinates. Kept so duplicates are counted once each, even when ingest
    re-reads the same record after a crash."""

    processing_id = models.CharField(max_length=128, db_index=True)
    kafka_topic = models.CharField(max_length=249)
    kafka_partition = models.IntegerField()
    kafka_offset = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "duplicate deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["kafka_topic", "kafka_partition", "kafka_offset"], name="duplicate_unique_coords"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.processing_id} @ {self.kafka_topic}[{self.kafka_partition}]:{self.kafka_offset}"
