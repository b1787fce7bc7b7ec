"""What the saga's actions produce: one row per business effect."""

from __future__ import annotations

from decimal import Decimal

from django.db import models

from leads.models.business import Business, Product
from leads.models.customers import Lead

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
