"""The leads app's models, by what they hold: businesses and catalogs, customers (leads)
and their history, and the effects the saga's actions produce. Imported from here."""

from leads.models.business import (
    DEFAULT_CONFIDENCE_THRESHOLDS,
    Business,
    Product,
    validate_phone_number_id,
    validate_sales_webhook_url,
)
from leads.models.customers import Erasure, ImmutableRecord, Lead, LeadActivity, LeadAlias, LeadQuerySet, Resolution
from leads.models.effects import (
    ActionEffect,
    CallbackRequest,
    Order,
    OrderLine,
    ReviewFlag,
    SalesNotification,
    SupportTicket,
)
from leads.models.identity import BSUID_PATTERN, CustomerIds, is_bsuid, new_lead_id

__all__ = [
    "BSUID_PATTERN",
    "DEFAULT_CONFIDENCE_THRESHOLDS",
    "ActionEffect",
    "Business",
    "CallbackRequest",
    "CustomerIds",
    "Erasure",
    "ImmutableRecord",
    "Lead",
    "LeadActivity",
    "LeadAlias",
    "LeadQuerySet",
    "Order",
    "OrderLine",
    "Product",
    "Resolution",
    "ReviewFlag",
    "SalesNotification",
    "SupportTicket",
    "is_bsuid",
    "new_lead_id",
    "validate_phone_number_id",
    "validate_sales_webhook_url",
]
