"""Replies we sent through the Cloud API, and the delivery statuses Meta reported for them.

State changes live here: apply_status moves a reply's delivery status forward by meaning,
in one statement, whichever order Meta's statuses arrive in.
"""

from __future__ import annotations

import functools
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone

from config.redaction import configured_secrets, redact
from core.errors import PermanentActionError, RetryableActionError

log = logging.getLogger(__name__)

# The processing id of an agent's reply starts so (OutboundQuerySet.agent_reply).
AGENT_REPLY_PREFIX = "agent."


class ReplyOutcomeUnknown(PermanentActionError):
    """An earlier attempt may have delivered the reply; only a human should decide to resend."""


class ReplyInFlight(RetryableActionError):
    """Another worker is sending this reply right now; look again once it has finished."""

    health_signal = False  # says nothing about the Cloud API's health


class OutboundQuerySet(models.QuerySet["OutboundMessage"]):
    """The send's state machine (whatsapp.send.reply says why it is shaped so): every status
    change of a reply is one of these, each one statement or one short transaction."""

    def claim_for_send(
        self, pk: int, *, in_flight: timedelta, template: tuple[str, str] | None = None
    ) -> OutboundMessage:
        """Lock the row and, if it is still ours to send, mark it SENDING (one more attempt)
        and commit; `template` (name, language) records that this attempt is a template
        message. The caller sends only if it came back SENDING; a row another worker
        finished in the meantime comes back as it is. ReplyOutcomeUnknown for a row that may
        be out already; ReplyInFlight while another worker has held it SENDING for less
        than `in_flight`."""
        abandoned = False
        with transaction.atomic():
            row = self.select_for_update().get(pk=pk)
            if row.status in FINAL:
                return row
            if row.status == OutboundMessage.Status.UNKNOWN:
                raise ReplyOutcomeUnknown("reply outcome unknown; not re-sent to avoid a duplicate")
            if row.status == OutboundMessage.Status.SENDING:
                if timezone.now() - row.updated_at < in_flight:
                    raise ReplyInFlight(
                        f"reply {row.idempotency_key} is being sent by another worker",
                        retry_after=in_flight.total_seconds(),
                    )
                # Nobody finished it: a worker died with the request possibly out. Commit that first.
                row.status = OutboundMessage.Status.UNKNOWN
                row.error_title = "worker stopped while sending"
                row.save(update_fields=["status", "error_title", "updated_at"])
                abandoned = True
            else:
                row.status = OutboundMessage.Status.SENDING
                row.attempts += 1
                row.template_name, row.template_language = template or ("", "")
                row.save(update_fields=["status", "attempts", "template_name", "template_language", "updated_at"])
        if abandoned:
            log.error("reply %s was left SENDING by a stopped worker; marked UNKNOWN, not re-sent", row.idempotency_key)
            raise ReplyOutcomeUnknown("reply outcome unknown; not re-sent to avoid a duplicate")
        return row

    def mark_sent(self, row: OutboundMessage, *, wamid: str, http_status: int | None) -> bool:
        """SENDING -> SENT with Meta's id, on the row object too; False when the row was gone.
        What Meta said of an earlier send (a requeue after a failed delivery) is cleared from
        the row (its DeliveryStatus rows and dead letter keep it), so this send's statuses apply."""
        sent_at = timezone.now()
        sent: dict[str, Any] = {
            "status": OutboundMessage.Status.SENT,
            "wamid": wamid,
            "http_status": http_status,
            "sent_at": sent_at,
            "error_code": None,
            "error_title": "",
            "fbtrace_id": "",
            "delivery_status": "",
            "delivered_at": None,
            "read_at": None,
            "failed_at": None,
            "updated_at": sent_at,
        }
        updated = self.filter(pk=row.pk).update(**sent)
        for name, value in sent.items():
            setattr(row, name, value)
        return bool(updated)

    def record_failure(
        self, pk: int, status: str, *, code: int | None, title: str, fbtrace_id: str, http_status: int | None
    ) -> None:
        """SENDING -> FAILED (Meta said no: nothing was sent), UNKNOWN (no answer) or
        SKIPPED_OPTED_OUT (131050: the customer stopped marketing messages), with what the
        Cloud API said, secrets removed."""
        secrets = configured_secrets()
        self.filter(pk=pk).update(
            status=status,
            error_code=code,
            error_title=redact(title, secrets)[:300],
            fbtrace_id=redact(fbtrace_id, secrets)[:64],
            http_status=http_status,
            updated_at=timezone.now(),
        )

    def mark_unknown(self, pk: int, why: str) -> None:
        """A bug or a kill between the POST and its answer: whether it went out is not known."""
        self.filter(pk=pk).update(status=OutboundMessage.Status.UNKNOWN, error_title=why, updated_at=timezone.now())

    def agent_reply(self, *, business: Any, lead: Any, text: str, by: Any) -> OutboundMessage:
        """A reply an agent typed, PENDING until whatsapp.send.agent sends it. No run of the
        pipeline stands behind it: its processing id is its own (AGENT_REPLY_PREFIX and a
        random hex), its saga run 0, so its key can never meet a bot reply's."""
        processing_id = f"{AGENT_REPLY_PREFIX}{uuid.uuid4().hex}"
        return self.create(
            processing_id=processing_id,
            saga_run=0,
            idempotency_key=f"{processing_id}:0:reply",
            business=business,
            lead=lead,
            to=lead.address,
            body=text,
            sent_by=by,
        )

    def skip(self, pk: int, status: str) -> bool:
        """A sendable row skipped for good (replies off, window closed, opted out, taken over); False when it
        was not sendable."""
        return bool(self.filter(pk=pk, status__in=SENDABLE).update(status=status, updated_at=timezone.now()))


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
        # The customer opted out (Lead.opted_out_at), or Meta answered 131050 (they stopped
        # marketing messages): not sent, not a failure, not dead-lettered.
        SKIPPED_OPTED_OUT = "SKIPPED_OPTED_OUT"
        # An agent had taken the conversation over (Lead.taken_over_by): the bot's text is kept
        # in body for the agent to read, nothing was sent; the run's actions stand.
        SKIPPED_AGENT = "SKIPPED_AGENT"

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
    # The customer's number, or their BSUID when we know no number (sent as `recipient`).
    to = models.CharField("recipient", max_length=140)
    body = models.TextField()
    context_message_id = models.CharField(max_length=256, blank=True, help_text="The inbound wamid replied to.")
    # Set when the reply went as a message template (the window had closed); body keeps the text it stands for.
    template_name = models.CharField(max_length=512, blank=True, default="", db_default="")
    template_language = models.CharField(max_length=16, blank=True, default="", db_default="")
    # The agent who wrote it by hand (the inbox app, whatsapp.send.agent); None for the bot's replies.
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
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

    objects = OutboundQuerySet.as_manager()

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


# A reply in one of these states is done; one in these may be sent (again).
FINAL = frozenset(
    {
        OutboundMessage.Status.SENT,
        OutboundMessage.Status.SKIPPED_WINDOW_CLOSED,
        OutboundMessage.Status.SKIPPED_DISABLED,
        OutboundMessage.Status.SKIPPED_OPTED_OUT,
        OutboundMessage.Status.SKIPPED_AGENT,
    }
)
SENDABLE = frozenset({OutboundMessage.Status.PENDING, OutboundMessage.Status.FAILED})

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
    recipient_user_id = models.CharField("recipient BSUID", max_length=140, blank=True)
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
