"""What Meta's webhook brought in: each signed delivery as it came, and each customer message
in it, which is also the outbox row the relay publishes on `ai.process.request`.

The message row is the outbox: it is written in the webhook's transaction, so a message is
either kept and will be published, or not kept and Meta was not told 200 (it redelivers).
The unique wamid absorbs Meta's redeliveries; the processing_id derived from it makes a
second publication (a relay that crashed after the broker acknowledged but before marking
the row) the same request, which the consumers dedupe.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from django.db import models
from django.utils import timezone

if TYPE_CHECKING:
    from leads.models import Business

# The Postgres channel the webhook notifies (on commit) when it stored something to
# publish, so the relay wakes at once instead of at its next poll.
OUTBOX_CHANNEL = "whatsapp_outbox"
# What last_error keeps of a broker or validation error.
_ERROR_CHARS = 1000


class WebhookDelivery(models.Model):
    """One POST from Meta whose signature verified, with its body byte for byte: what was
    received can always be read again, whatever our parser made of it."""

    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    body = models.BinaryField(help_text="The raw request body, as signed.")
    # A replay of bytes already stored (Meta's retry of a slow answer, or anyone holding a
    # signed body) is answered 200 and stored once: the hash is unique. Empty on deliveries
    # stored before it was kept (NULL, so they never clash).
    body_sha256 = models.CharField(  # noqa: DJ001
        "SHA-256 of the body", max_length=64, null=True, blank=True, editable=False
    )
    messages = models.PositiveIntegerField(default=0, help_text="Messages in the delivery.")
    new_messages = models.PositiveIntegerField(default=0, help_text="Of those, seen for the first time.")
    duplicates = models.PositiveIntegerField(default=0, help_text="Of those, already stored (a redelivery).")
    unroutable = models.PositiveIntegerField(default=0, help_text="New messages for a number no business has.")
    statuses = models.PositiveIntegerField(default=0, help_text="Status notifications in the delivery.")

    class Meta:
        ordering = ["-received_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [models.UniqueConstraint(fields=["body_sha256"], name="webhook_delivery_unique_body")]

    def __str__(self) -> str:
        return f"webhook delivery {self.pk} ({self.messages} messages, {self.statuses} statuses)"


class InboundMessageQuerySet(models.QuerySet["InboundMessage"]):
    def pending(self) -> InboundMessageQuerySet:
        return self.filter(state=InboundMessage.State.PENDING)

    def claim_batch(self, size: int) -> list[InboundMessage]:
        """The oldest unpublished rows, locked until the transaction ends; rows another relay
        holds are skipped, so two relays never publish the same row at once."""
        return list(
            self.pending()
            .select_related("business")
            .order_by("id")
            .select_for_update(skip_locked=True, of=("self",))[:size]
        )

    def mark_published(self, ids: list[int], now: datetime) -> int:
        if not ids:
            return 0
        return self.filter(pk__in=ids, state=InboundMessage.State.PENDING).update(
            state=InboundMessage.State.PUBLISHED,
            published_at=now,
            publish_attempts=models.F("publish_attempts") + 1,
            last_error="",
        )

    def mark_failed(self, ids: list[int], error: str) -> int:
        """The broker did not acknowledge them: they stay pending, to be published again."""
        if not ids:
            return 0
        return self.filter(pk__in=ids, state=InboundMessage.State.PENDING).update(
            publish_attempts=models.F("publish_attempts") + 1, last_error=error[:_ERROR_CHARS]
        )


class InboundMessage(models.Model):
    """One customer message from the webhook, and its outbox state."""

    class State(models.TextChoices):
        PENDING = "PENDING", "to publish"
        PUBLISHED = "PUBLISHED", "published"
        # No business has the phone-number id it was sent to: kept and counted, never published.
        UNROUTABLE = "UNROUTABLE", "no business for the number"
        # What we built from it is not a valid request (say, a wa_id that is not a number):
        # a bad record, kept with the reason, never retried.
        REJECTED = "REJECTED", "not a valid request"
        # An item of a signed delivery we could not read (no id, a body of the wrong shape):
        # kept with its JSON path and the reason, while the delivery's other items run.
        UNREADABLE = "UNREADABLE", "could not be read"
        # Meta's system messages (a customer changed number or BSUID): applied to the lead
        # where it is stored, never published nor answered.
        APPLIED = "APPLIED", "applied at the webhook"
        # Sent more than Meta's retry horizon (7 days) ago, say a replayed body or a clock
        # from 2001: kept, never run automatically; an operator runs it from the admin.
        TOO_OLD = "TOO_OLD", "older than Meta's retry horizon"

    # Empty (NULL) only on an UNREADABLE item that had no readable id.
    wamid = models.CharField("WhatsApp message id", max_length=256, unique=True, null=True, blank=True)
    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.SET_NULL, null=True, blank=True, related_name="inbound_messages"
    )
    business = models.ForeignKey(
        "leads.Business", on_delete=models.PROTECT, null=True, blank=True, related_name="inbound_messages"
    )
    phone_number_id = models.CharField("to phone-number id", max_length=64)
    # Meta withholds the number of a customer who adopted a username: then only the BSUID.
    wa_id = models.CharField("customer WhatsApp number", max_length=32, blank=True)
    user_id = models.CharField("customer BSUID", max_length=140, blank=True)
    parent_user_id = models.CharField("customer parent BSUID", max_length=140, blank=True)
    username = models.CharField(max_length=64, blank=True)
    profile_name = models.CharField(max_length=256, blank=True)
    type = models.CharField(max_length=32)
    text = models.TextField(blank=True, help_text="Text body, button or reply title, or media caption.")
    media_id = models.CharField(max_length=256, blank=True)
    media_mime_type = models.CharField(max_length=255, blank=True)
    media_caption = models.TextField(blank=True)
    media_filename = models.CharField(max_length=255, blank=True)
    received_at = models.DateTimeField(null=True, blank=True, help_text="When the customer sent it (Meta's timestamp).")
    stored_at = models.DateTimeField(default=timezone.now, db_index=True)
    processing_id = models.CharField(max_length=128, unique=True, null=True, blank=True)
    lead_id = models.CharField(max_length=64, blank=True)
    # Where in the delivery an UNREADABLE item was (entry[0].changes[0].value.messages[1]).
    json_path = models.CharField(max_length=200, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    published_at = models.DateTimeField(null=True, blank=True)
    publish_attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    objects = InboundMessageQuerySet.as_manager()

    class Meta:
        ordering = ["-stored_at", "-id"]
        indexes = [
            # The relay's poll and the backlog gauge read only the unpublished rows.
            models.Index(fields=["id"], name="inbound_pending", condition=models.Q(state="PENDING")),
            # route_unroutable reads only the messages no business had.
            models.Index(fields=["phone_number_id"], name="inbound_unroutable", condition=models.Q(state="UNROUTABLE")),
            # Erasing a customer (whatsapp.ops.erasure) finds their messages by lead, and the
            # few that joined no lead (unroutable, too old) by number or BSUID.
            models.Index(fields=["lead_id"], name="inbound_lead", condition=~models.Q(lead_id="")),
            models.Index(fields=["wa_id"], name="inbound_unjoined_number", condition=models.Q(lead_id="")),
            models.Index(fields=["user_id"], name="inbound_unjoined_bsuid", condition=models.Q(lead_id="")),
        ]

    def __str__(self) -> str:
        return f"{self.wamid or self.json_path} ({self.state})"

    def route(self, business: Business) -> None:
        """An UNROUTABLE message whose number a business now has, or a TOO_OLD one an operator
        runs: to the relay, with its lead."""
        self.business = business
        # A system notice is never published (its identifier change needs the lead it named).
        self.state = self.State.APPLIED if self.type == "system" else self.State.PENDING
        self.last_error = ""
        self.save(update_fields=["business", "lead_id", "state", "last_error"])

    def reject(self, reason: str) -> None:
        """A bad record: kept with its reason, never published, never retried."""
        self.state = self.State.REJECTED
        self.last_error = reason[:_ERROR_CHARS]
        self.publish_attempts += 1
        self.save(update_fields=["state", "last_error", "publish_attempts"])
