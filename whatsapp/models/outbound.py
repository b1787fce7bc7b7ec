"""Replies we sent through the Cloud API, and the delivery statuses Meta reported for them.

State changes live here: apply_status moves a reply's delivery status forward by meaning,
in one statement, whichever order Meta's statuses arrive in.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, models
from django.utils import timezone


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
        title, which makes the reply sendable again by a requeue (whatsapp.send.reply); a
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

    Stored by the webhook inside its one short transaction (whatsapp.edge.statuses.record_statuses)
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
