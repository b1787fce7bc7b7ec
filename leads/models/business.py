"""Tenants and their catalogs: the unit every event names and every limit is per."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

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
    # The WhatsApp Business Account the number belongs to: Meta's template and account
    # webhooks name the account, not the number (entry.id).
    waba_id = models.CharField(
        "WhatsApp Business Account id", max_length=64, blank=True, db_index=True, validators=[validate_phone_number_id]
    )
    replies_enabled = models.BooleanField(default=True)
    # A result whose processing_id names no message our webhook stored comes from the AI
    # service's own intake; a business that takes all its messages through our webhook turns
    # this off, and such a result is then a dead letter (request_mismatch), never run.
    accepts_direct_results = models.BooleanField(
        "accepts results for messages the webhook did not store",
        default=True,
        help_text="Off when every message of this business comes through our WhatsApp webhook.",
    )
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

    # Where a business's messages come from and where its notifications go: the admin
    # changes them only with the permission change_business_routing, and logs each change.
    ROUTING_FIELDS = ("phone_number_id", "waba_id", "sales_webhook_url", "sales_webhook_secret")

    class Meta:
        verbose_name_plural = "businesses"
        ordering = ["business_id"]
        permissions = [
            (
                "change_business_routing",
                "Can change a business's routing (phone-number id, WABA id, sales webhook URL and secret)",
            )
        ]
        constraints = [
            # The webhook routes a message by the number it came to: two active businesses
            # claiming one number would each be a customer's messages away from the other's.
            models.UniqueConstraint(
                fields=["phone_number_id"],
                condition=models.Q(is_active=True) & ~models.Q(phone_number_id=""),
                name="business_one_active_per_phone_number",
                violation_error_message="Another active business already has this WhatsApp phone-number id.",
            )
        ]

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
