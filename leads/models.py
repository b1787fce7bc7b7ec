"""Tenants, their catalogs, and the leads who write to them."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, NoReturn

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from core.clients.destinations import url_problem

# Confidence below which an intent goes to human review instead of acting.
DEFAULT_CONFIDENCE_THRESHOLDS: dict[str, float] = {
    "ORDER_REQUEST": 0.85,
    "COMPLAINT": 0.6,
    "PRICING_INQUIRY": 0.7,
    "AVAILABILITY_INQUIRY": 0.7,
    "SCHEDULE_CALL": 0.7,
    "UNKNOWN": 0.7,
}


# Meta's phone-number ids are numbers; the id goes into the Graph API's URL path, so
# anything else (a slash, "..", a query) is refused rather than sent.
validate_phone_number_id = RegexValidator(
    r"^[0-9]+\Z", "A WhatsApp phone-number id is digits only.", code="invalid_phone_number_id"
)


def validate_sales_webhook_url(value: str) -> None:
    """https only (unless SALES_WEBHOOK_ALLOW_HTTP), no user:password@, and no loopback,
    private or metadata address (unless SALES_WEBHOOK_ALLOWED_HOSTS lists it). A host
    name is resolved and checked again on every call (core.clients.destinations)."""
    problem = url_problem(value) if value else None
    if problem:
        raise ValidationError(f"The sales webhook URL {problem}.", code="invalid_sales_webhook_url")


class Business(models.Model):
    """A tenant's shop: the unit every event names and every limit is per."""

    business_id = models.CharField(max_length=64, unique=True)
    tenant_id = models.CharField(max_length=64, db_index=True)
    display_name = models.CharField(max_length=200)
    phone_number_id = models.CharField(
        "WhatsApp phone-number id", max_length=64, blank=True, validators=[validate_phone_number_id]
    )
    replies_enabled = models.BooleanField(default=True)
    default_language = models.CharField(max_length=16, default="en")
    confidence_thresholds = models.JSONField(
        default=dict, blank=True, help_text='Per-intent overrides, e.g. {"ORDER_REQUEST": 0.9}.'
    )
    sales_webhook_url = models.URLField(blank=True, validators=[validate_sales_webhook_url])
    sales_webhook_secret = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Bumped by every save of the business or of one of its products: the version the
    # workers' per-process cache checks (leads.directory).
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "businesses"
        ordering = ["business_id"]

    def __str__(self) -> str:
        return f"{self.display_name} ({self.business_id})"

    def threshold_for(self, intent: str) -> float:
        overrides = self.confidence_thresholds or {}
        return float(overrides.get(intent, DEFAULT_CONFIDENCE_THRESHOLDS.get(intent, 0.7)))


class Product(models.Model):
    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="products")
    sku = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0"))
    currency = models.CharField(max_length=3, default="USD")
    stock = models.IntegerField(default=0)

    class Meta:
        ordering = ["business", "sku"]
        constraints = [
            models.UniqueConstraint(fields=["business", "sku"], name="product_unique_sku_per_business"),
            models.CheckConstraint(condition=models.Q(stock__gte=0), name="product_stock_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.sku} {self.name}"


class LeadQuerySet(models.QuerySet["Lead"]):
    def upsert(
        self, *, business: Business, lead_id: str, wa_id: str, customer_name: str, received_at: datetime
    ) -> Lead:
        """The lead, created or brought up to date with one inbound message, and locked until
        the transaction ends: its latest inbound time only moves forward (messages arrive in
        any order), a name is kept until a new one is given, the number follows the message.

        One INSERT ... ON CONFLICT DO UPDATE: every message upserts its lead, and the
        statement also takes the row lock that orders two messages of one lead."""
        now = timezone.now()
        return next(
            iter(
                self.raw(
                    """
            INSERT INTO leads_lead (lead_id, business_id, wa_id, customer_name, state, needs_review,
                                    last_inbound_at, created_at, updated_at)
            VALUES (%(lead_id)s, %(business)s, %(wa_id)s, %(name)s, %(state)s, false, %(received)s, %(now)s, %(now)s)
            ON CONFLICT (business_id, lead_id) DO UPDATE SET
                last_inbound_at = GREATEST(leads_lead.last_inbound_at, EXCLUDED.last_inbound_at),
                customer_name = CASE WHEN EXCLUDED.customer_name <> '' THEN EXCLUDED.customer_name
                                     ELSE leads_lead.customer_name END,
                wa_id = EXCLUDED.wa_id,
                updated_at = EXCLUDED.updated_at
            RETURNING *
            """,
                    {
                        "lead_id": lead_id,
                        "business": business.pk,
                        "wa_id": wa_id,
                        "name": customer_name or "",
                        "state": Lead.State.NEW,
                        "received": received_at,
                        "now": now,
                    },
                )
            )
        )


class Lead(models.Model):
    """A customer conversation with one business."""

    class State(models.TextChoices):
        NEW = "NEW"
        CONTACTED = "CONTACTED"
        QUALIFIED = "QUALIFIED"
        CONVERTED = "CONVERTED"
        LOST = "LOST"

    lead_id = models.CharField(max_length=64)
    business = models.ForeignKey(Business, on_delete=models.PROTECT, related_name="leads")
    wa_id = models.CharField("customer WhatsApp number", max_length=15)
    customer_name = models.CharField(max_length=256, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.NEW, db_index=True)
    needs_review = models.BooleanField(default=False, db_index=True)
    last_inbound_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = LeadQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at"]
        constraints = [
            models.UniqueConstraint(fields=["business", "lead_id"], name="lead_unique_per_business"),
        ]

    def __str__(self) -> str:
        return self.lead_id


class ImmutableRecord(ValidationError):
    pass


class LeadActivity(models.Model):
    """The lead's history. Append-only: a trigger in the database refuses
    UPDATE and DELETE, so not even raw SQL or a bug can rewrite it."""

    lead = models.ForeignKey(Lead, on_delete=models.PROTECT, related_name="activities")
    kind = models.CharField(max_length=40, db_index=True)
    processing_id = models.CharField(max_length=128, blank=True, db_index=True)
    from_state = models.CharField(max_length=16, blank=True)
    to_state = models.CharField(max_length=16, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "lead activities"

    def __str__(self) -> str:
        return f"{self.kind} on {self.lead_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not kwargs.get("force_insert"):
            raise ImmutableRecord("lead activities are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise ImmutableRecord("lead activities are append-only")


# --- Saga effects -------------------------------------------------------------
# One row per business effect an action executor produced. The unique
# idempotency_key (processing_id:saga_run:step_order:action) is what makes a
# redelivered task or a re-driven message find the earlier effect instead of
# making a second one.


class ActionEffect(models.Model):
    """Fields every effect row carries, so any effect can be traced back to the
    message and saga run that caused it."""

    processing_id = models.CharField(max_length=128, db_index=True)
    saga_run = models.PositiveIntegerField()
    idempotency_key = models.CharField(max_length=200, unique=True)

    class Meta:
        abstract = True


class Order(ActionEffect):
    class Status(models.TextChoices):
        CREATED = "CREATED"
        CANCELLED = "CANCELLED"

    business = models.ForeignKey(Business, on_delete=models.PROTECT, related_name="orders")
    lead = models.ForeignKey(Lead, on_delete=models.PROTECT, related_name="orders")
    # Set from the pk right after insert. null (not "") until then, because
    # unique would otherwise allow only one blank row at a time.
    reference = models.CharField(max_length=32, unique=True, null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATED)
    total = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0"))
    currency = models.CharField(max_length=3)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "business"], name="order_status_business")]

    def __str__(self) -> str:
        return self.reference or f"order #{self.pk}"

    @staticmethod
    def reference_for(pk: int) -> str:
        return f"ORD-{pk:06d}"


class OrderLine(models.Model):
    """A priced line. sku, name and unit_price are copied from the catalog so
    the order keeps what was charged even if the product changes later."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="order_lines")
    sku = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)
    line_total = models.DecimalField(max_digits=12, decimal_places=2)

    class Meta:
        ordering = ["order", "id"]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.sku}"


class SupportTicket(ActionEffect):
    class Status(models.TextChoices):
        OPEN = "OPEN"
        VOID = "VOID"

    class Priority(models.TextChoices):
        LOW = "LOW"
        NORMAL = "NORMAL"
        HIGH = "HIGH"

    business = models.ForeignKey(Business, on_delete=models.PROTECT, related_name="support_tickets")
    lead = models.ForeignKey(Lead, on_delete=models.PROTECT, related_name="support_tickets")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    priority = models.CharField(max_length=16, choices=Priority.choices, default=Priority.NORMAL)
    # The text the customer gave is kept even when it matched no order, so a
    # human can still look it up.
    order_reference = models.CharField(max_length=64, blank=True)
    order = models.ForeignKey(Order, on_delete=models.SET_NULL, null=True, blank=True, related_name="support_tickets")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "business"], name="ticket_status_business")]

    def __str__(self) -> str:
        return f"ticket #{self.pk} ({self.priority})"


class ReviewFlag(ActionEffect):
    class Status(models.TextChoices):
        OPEN = "OPEN"
        CLEARED = "CLEARED"

    business = models.ForeignKey(Business, on_delete=models.PROTECT, related_name="review_flags")
    lead = models.ForeignKey(Lead, on_delete=models.PROTECT, related_name="review_flags")
    reason = models.CharField(max_length=100)
    detail = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "lead"], name="flag_status_lead")]

    def __str__(self) -> str:
        return f"{self.reason} on {self.lead_id} ({self.status})"


class SalesNotification(ActionEffect):
    class Kind(models.TextChoices):
        ORDER = "order"
        PRICING = "pricing"
        COMPLAINT = "complaint"
        CALLBACK = "callback"

    class Status(models.TextChoices):
        # Written by an older version before its POST; taken over like a stale SENDING row.
        PENDING = "PENDING"
        # Committed before the POST, which runs outside any transaction; SENT once it
        # succeeded, deleted if it failed (see whatsapp/actions/notify_sales.py).
        SENDING = "SENDING"
        SENT = "SENT"
        SKIPPED = "SKIPPED"
        RETRACTED = "RETRACTED"
        RETRACTION_FAILED = "RETRACTION_FAILED"

    business = models.ForeignKey(Business, on_delete=models.PROTECT, related_name="sales_notifications")
    lead = models.ForeignKey(Lead, on_delete=models.PROTECT, related_name="sales_notifications")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    payload = models.JSONField(default=dict, blank=True, help_text="The exact JSON body sent, without customer text.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    # The URL it went to, so a retraction reaches the same receiver even if
    # the business changes its webhook in between. Configuration that may hold a
    # token: the admin shows only its origin (scheme://host:port).
    webhook_url = models.URLField(blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "business"], name="salesnote_status_business")]

    def __str__(self) -> str:
        return f"{self.kind} notification #{self.pk} ({self.status})"


class CallbackRequest(ActionEffect):
    class Status(models.TextChoices):
        REQUESTED = "REQUESTED"
        CANCELLED = "CANCELLED"

    business = models.ForeignKey(Business, on_delete=models.PROTECT, related_name="callback_requests")
    lead = models.ForeignKey(Lead, on_delete=models.PROTECT, related_name="callback_requests")
    preferred_time = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.REQUESTED)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["preferred_time", "id"]
        indexes = [models.Index(fields=["status", "preferred_time"], name="callback_status_time")]

    def __str__(self) -> str:
        return f"callback for {self.lead_id} at {self.preferred_time:%Y-%m-%d %H:%M}"
