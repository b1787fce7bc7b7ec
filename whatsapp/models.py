"""The inbox: one row per analysed message taken in from Kafka."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
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
        if not rows:
            return None
        message = rows[0]
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
                              m.received_at, m.lead_id, m.payload->>'message_id' AS message_id,
                              (SELECT b.phone_number_id FROM leads_business b
                               WHERE b.business_id = m.business_id) AS phone_number_id,
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
                )
                SELECT intent, kafka_timestamp, received_at, lead_id, message_id, phone_number_id FROM done
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
            "message_id": row[4],
            "phone_number_id": row[5],
            "finished_at": now,
        }


@functools.cache
def _lead_fields() -> list[models.Field]:
    return list(Lead._meta.concrete_fields)


def _columns(model: type[models.Model]) -> list[str]:
    """The model's columns, in field order (a concrete field always has one; the stubs allow None)."""
    return [cast(str, f.column) for f in model._meta.concrete_fields]


@functools.cache
def _row_sql(by: str, lock: bool) -> str:
    """InboxQuerySet.row's statement, built once per shape from the models' own columns."""
    quote = connection.ops.quote_name
    columns = [f"m.{quote(column)}" for column in _columns(ProcessedMessage)]
    columns += [f"l.{quote(column)} AS {quote('lead__' + column)}" for column in _columns(Lead)]
    return (
        f"SELECT {', '.join(columns)}, (SELECT b.updated_at FROM leads_business b "
        f"WHERE b.business_id = m.business_id) AS business_version "
        f"FROM whatsapp_processedmessage m LEFT JOIN leads_lead l ON l.id = m.lead_record_id "
        f"WHERE m.{quote(by)} = %s" + (" FOR UPDATE OF m" if lock else "")
    )


class ProcessedMessage(models.Model):
    """The inbox row. Its unique processing_id is the dedupe key, and its
    status is the source of truth the sweeper re-drives from."""

    class Status(models.TextChoices):
        RECEIVED = "RECEIVED"
        PROCESSING = "PROCESSING"
        PROCESSED = "PROCESSED"
        FAILED = "FAILED"

    processing_id = models.CharField(max_length=128, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    business_id = models.CharField(max_length=64, db_index=True)
    lead_id = models.CharField(max_length=64, db_index=True)
    intent = models.CharField(max_length=32, db_index=True)
    payload = models.JSONField(help_text="The validated event.")
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
        indexes = [
            models.Index(fields=["status", "updated_at"], name="inbox_status_updated"),
            models.Index(fields=["kafka_topic", "kafka_partition", "kafka_offset"], name="inbox_kafka_coords"),
            # The admin overview's messages per minute and latency over the last hour.
            models.Index(fields=["finished_at"], name="inbox_finished", condition=models.Q(finished_at__isnull=False)),
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


class SagaStepQuerySet(models.QuerySet["SagaStep"]):
    def begin_attempt(self, processing_id: str, saga_run: int, order: int, now: datetime) -> SagaStep | None:
        """Count a new attempt of a PENDING step of an active run, committed at once (so a
        failure's rollback, or a killed worker, keeps it), and return the step; None when the
        step is not PENDING or the run not active (the caller asks why).

        One UPDATE ... FROM ... RETURNING, because every action runs it: it checks the run,
        counts the attempt, logs when it started and reads the step, where four statements
        and a transaction did before."""
        with connection.cursor() as cursor:
            cursor.execute(
                """
                UPDATE whatsapp_sagastep s
                SET attempts = s.attempts + 1, updated_at = %(now)s,
                    attempt_log = s.attempt_log || jsonb_build_array(
                        jsonb_build_object('attempt', s.attempts + 1, 'at', %(at)s::text))
                FROM whatsapp_processedmessage m
                WHERE m.processing_id = %(pid)s AND m.saga_run = %(run)s AND m.status = 'PROCESSING'
                  AND s.message_id = m.id AND s.saga_run = m.saga_run AND s."order" = %(order)s
                  AND s.status = 'PENDING'
                RETURNING s.id, s.message_id, s.action, s.params, s.attempts
                """,
                {"now": now, "at": now.isoformat(), "pid": processing_id, "run": saga_run, "order": order},
            )
            row = cursor.fetchone()
        if row is None:
            return None
        params = json.loads(row[3]) if isinstance(row[3], str) else row[3]
        return SagaStep(
            pk=row[0],
            message_id=row[1],
            saga_run=saga_run,
            order=order,
            action=row[2],
            params=params,
            attempts=row[4],
            status=SagaStep.Status.PENDING,
        )


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


class OutboundMessage(models.Model):
    """One reply to a customer through the WhatsApp Cloud API, per (processing_id, saga run).

    The unique idempotency_key makes a redelivered task find the earlier send instead of
    making a second one. The row is written and marked SENDING in its own committed
    transaction before the HTTP call, so a crash mid-call leaves evidence that a message
    may be out (SENDING / UNKNOWN) rather than a clean slate that invites a duplicate.
    The access token is never stored here: error_title is redacted by the client.
    """

    class Status(models.TextChoices):
        PENDING = "PENDING"
        SENDING = "SENDING"
        SENT = "SENT"
        FAILED = "FAILED"
        UNKNOWN = "UNKNOWN"
        SKIPPED_WINDOW_CLOSED = "SKIPPED_WINDOW_CLOSED"
        SKIPPED_DISABLED = "SKIPPED_DISABLED"

    class Delivery(models.TextChoices):
        """What Meta's status webhooks said of the sent message."""

        SENT = "sent"
        DELIVERED = "delivered"
        FAILED = "failed"
        READ = "read"

    processing_id = models.CharField(max_length=128, db_index=True)
    saga_run = models.PositiveIntegerField()
    idempotency_key = models.CharField(max_length=200, unique=True)
    business = models.ForeignKey("leads.Business", on_delete=models.PROTECT, related_name="outbound_messages")
    lead = models.ForeignKey("leads.Lead", on_delete=models.PROTECT, related_name="outbound_messages")
    to = models.CharField("recipient wa_id", max_length=32)
    body = models.TextField()
    context_message_id = models.CharField(max_length=256, blank=True, help_text="The inbound wamid replied to.")
    wamid = models.CharField(max_length=256, blank=True, db_index=True, help_text="The id Meta gave the sent message.")
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.PENDING, db_index=True)
    error_code = models.IntegerField(null=True, blank=True, help_text="Graph API error code of the last failure.")
    error_title = models.CharField(max_length=300, blank=True)
    fbtrace_id = models.CharField(max_length=64, blank=True, help_text="Quote it to Meta support.")
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(
        null=True, blank=True, help_text="When Meta accepted it, then Meta's own time from its sent status."
    )
    delivery_status = models.CharField(
        max_length=16,
        choices=Delivery.choices,
        blank=True,
        db_index=True,
        help_text="The furthest delivery status Meta reported, by meaning (sent < delivered < failed < read), "
        "not by arrival.",
    )
    delivered_at = models.DateTimeField(null=True, blank=True, help_text="Meta's time of the delivered status.")
    read_at = models.DateTimeField(null=True, blank=True, help_text="Meta's time of the read status.")
    failed_at = models.DateTimeField(null=True, blank=True, help_text="Meta's time of the failed status.")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "business"], name="outbound_status_business")]

    def __str__(self) -> str:
        return f"reply {self.idempotency_key} ({self.status})"

    @classmethod
    def apply_status(
        cls,
        wamid: str,
        status: str,
        *,
        at: datetime,
        error_code: int | None = None,
        error_title: str = "",
    ) -> StatusApplied | None:
        """Apply one of Meta's delivery statuses to the reply it names, in one UPDATE; None
        when no reply has that wamid.

        Its time is always recorded (the first report of each wins; `sent` takes Meta's time
        over ours), but delivery_status only moves forward in meaning, so statuses arriving
        out of order (Meta does not promise any order) end in the same state. `failed`
        ranks above `sent` and `delivered` (Meta reports it after `sent` when the message
        could not reach the phone) and below `read` (a read message did reach it: a failure
        reported alongside, in any order, is contradicted and changes nothing). A `failed`
        that applies also turns the send's status SENT into FAILED with Graph's code and
        title, which makes the reply sendable again by a requeue (whatsapp.outbound); a
        `read` over a `failed` turns it back into SENT, so a requeue then sends nothing."""
        if status not in DELIVERY_RANK:
            raise ValueError(f"not a delivery status: {status!r}")
        rank = DELIVERY_RANK[status]
        with connection.cursor() as cursor:
            cursor.execute(
                _apply_status_sql(),
                {
                    "wamid": wamid,
                    "status": status,
                    "rank": rank,
                    "at": at,
                    "now": timezone.now(),
                    "code": error_code,
                    "title": error_title[:300],
                },
            )
            row = cursor.fetchone()
        if row is None:
            return None
        return StatusApplied(
            outbound_id=row[0],
            processing_id=row[1],
            saga_run=row[2],
            lead_id=row[3],
            business_id=row[4],
            applied=DELIVERY_RANK.get(row[5], 0) < rank,
        )


# The delivery statuses by meaning; a status applies only over one of lower rank.
DELIVERY_RANK = {"sent": 1, "delivered": 2, "failed": 3, "read": 4}


@dataclass(frozen=True)
class StatusApplied:
    """What OutboundMessage.apply_status found: the reply, and whether the status moved it."""

    outbound_id: int
    processing_id: str
    saga_run: int
    lead_id: int
    business_id: int
    applied: bool


@functools.cache
def _apply_status_sql() -> str:
    """OutboundMessage.apply_status's statement. The row is read locked in the FROM (so its
    status before the change is the one the change is decided on, even under a concurrent
    update) and changed in the same statement: the hot path of every status."""
    rank_of = "CASE {col} " + " ".join(f"WHEN '{s}' THEN {r}" for s, r in DELIVERY_RANK.items()) + " ELSE 0 END"
    moves = f"({rank_of.format(col='before.delivery_status')} < %(rank)s)"
    failed = f"({moves} AND %(status)s = 'failed')"
    return f"""
        UPDATE whatsapp_outboundmessage o SET
            delivery_status = CASE WHEN {moves} THEN %(status)s ELSE o.delivery_status END,
            sent_at = CASE WHEN %(status)s = 'sent' THEN %(at)s ELSE o.sent_at END,
            delivered_at = CASE WHEN %(status)s = 'delivered' THEN coalesce(o.delivered_at, %(at)s)
                                ELSE o.delivered_at END,
            read_at = CASE WHEN %(status)s = 'read' THEN coalesce(o.read_at, %(at)s) ELSE o.read_at END,
            failed_at = CASE WHEN %(status)s = 'failed' THEN coalesce(o.failed_at, %(at)s) ELSE o.failed_at END,
            status = CASE
                WHEN {failed} AND o.status = 'SENT' THEN 'FAILED'
                WHEN {moves} AND %(status)s = 'read' AND before.delivery_status = 'failed' AND o.status = 'FAILED'
                    THEN 'SENT'
                ELSE o.status END,
            error_code = CASE WHEN {failed} THEN %(code)s ELSE o.error_code END,
            error_title = CASE WHEN {failed} THEN %(title)s ELSE o.error_title END,
            updated_at = %(now)s
        FROM (SELECT id, delivery_status FROM whatsapp_outboundmessage
              WHERE wamid = %(wamid)s AND wamid <> '' LIMIT 1 FOR UPDATE) before
        WHERE o.id = before.id
        RETURNING o.id, o.processing_id, o.saga_run, o.lead_id, o.business_id, before.delivery_status
    """


class DeliveryStatus(models.Model):
    """One status notification Meta sent about a message we sent, kept as it came.

    Stored by the webhook inside its one short transaction (whatsapp.delivery.record_statuses)
    and applied to its reply afterwards by a task. Unique per (wamid, status), so Meta's
    redeliveries of the same notification are absorbed; `outcome` says what applying it did."""

    class Outcome(models.TextChoices):
        PENDING = "", "pending"
        APPLIED = "applied"
        # Recorded, but a status of higher meaning was there already (read before delivered).
        STALE = "stale"
        # No reply of ours has this wamid (after a few looks: a status may outrun the send's own update).
        UNKNOWN = "unknown"
        # A status we do not rank (Meta adds some now and then); kept, not applied.
        IGNORED = "ignored"

    wamid = models.CharField(max_length=256)
    status = models.CharField(max_length=32)
    phone_number_id = models.CharField(max_length=32, blank=True, help_text="The business number it came to.")
    recipient_id = models.CharField(max_length=64, blank=True)
    occurred_at = models.DateTimeField(null=True, blank=True, help_text="Meta's time of the status.")
    error_code = models.IntegerField(null=True, blank=True, help_text="The first errors[].code of a failed status.")
    error_title = models.CharField(max_length=300, blank=True)
    errors = models.JSONField(default=list, blank=True)
    raw = models.JSONField(help_text="The status object as Meta sent it.")
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, blank=True, default="", db_index=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "delivery statuses"
        ordering = ["-received_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["wamid", "status"], name="delivery_status_unique")]

    def __str__(self) -> str:
        return f"{self.status} {self.wamid}"

    def settle(self, outcome: str) -> None:
        """Record what applying the status did; it is not applied again."""
        self.outcome, self.applied_at = outcome, timezone.now()
        self.save(update_fields=["outcome", "applied_at"])


class CircuitBreaker(models.Model):
    """A circuit breaker as the admin shows it. There is no table: the state lives
    in Redis (core.breakers). The model exists so the admin has a page for
    breakers, permissions (view, change = force open / close / reset) guard it,
    and each forced change is a LogEntry naming the breaker."""

    name = models.CharField(max_length=200, primary_key=True)

    class Meta:
        managed = False
        default_permissions = ("view", "change")
        verbose_name = "circuit breaker"

    def __str__(self) -> str:
        return self.name


# The webhook's deliveries and inbound messages (the request outbox) live in their own module.
from whatsapp.inbound import InboundMessage, WebhookDelivery  # noqa: E402, F401
