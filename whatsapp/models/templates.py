"""Which approved message template a business sends, per reply kind, once the customer's
24-hour window has closed (whatsapp.send.template), and how the reply's fields fill it.

A handler names the kind of every reply it writes (ReplyKind) and the fields the reply was
made of (the business's name, the products, the time of a call...); the fields only known
once the saga has acted (an order's reference, a ticket's number) are read from the saga's
results at send time, and the customer's name from the lead. A ReplyTemplate maps those
fields, in order, onto the template's body parameters ({{1}}, {{2}}... or, for a template
with named parameters, parameter_name = the field's name).

The template itself (status, category, languages) is Meta's and lives in MessageTemplate,
per WhatsApp Business Account, name and language: a ReplyTemplate names a template, and the
language is chosen when sending (whatsapp.send.template says how).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models


class ReplyKind(models.TextChoices):
    """What a handler's reply says, whatever its language: one template per kind."""

    ORDER_CONFIRMED = "order_confirmed", "order confirmed"
    ORDER_REVIEW = "order_review", "order request under review"
    TICKET_OPENED = "ticket_opened", "support ticket opened"
    CALL_SCHEDULED = "call_scheduled", "call scheduled"
    PRICING = "pricing", "prices"
    AVAILABILITY = "availability", "availability"
    FOLLOW_UP = "follow_up", "a person will follow up (review)"


# The fields a template parameter can take, and what each holds. Handlers fill the ones
# their kind has (plan time); SEND_TIME_FIELDS come from the lead and the saga's results.
FIELDS = {
    "customer_name": "the customer's WhatsApp profile name (else their username, else 'there')",
    "business": "the business's display name",
    "products": "the products, e.g. '2 x sourdough loaf, 1 x croissant'",
    "total": "the order's total, e.g. '13.00 USD'",
    "order_reference": "the order's reference (ORD-000123) once created, else the one the customer gave",
    "ticket_number": "the support ticket's number",
    "severity": "the complaint's severity (low, medium, high)",
    "date": "the call's date (YYYY-MM-DD, the customer's own clock)",
    "time": "the call's time (HH:MM)",
    "offset": "the call's UTC offset (UTC+01:00)",
}
SEND_TIME_FIELDS = frozenset({"customer_name", "order_reference", "ticket_number"})


class ReplyTemplate(models.Model):
    """The template a business sends for one reply kind outside the 24-hour window."""

    class ParameterFormat(models.TextChoices):
        POSITIONAL = "POSITIONAL", "positional ({{1}}, {{2}}, ...)"
        NAMED = "NAMED", "named ({{customer_name}}, ...)"

    business = models.ForeignKey("leads.Business", on_delete=models.CASCADE, related_name="reply_templates")
    kind = models.CharField(max_length=32, choices=ReplyKind.choices)
    template_name = models.CharField(
        max_length=512, help_text="The template's name at Meta (its languages are Meta's: see Message templates)."
    )
    parameter_format = models.CharField(
        max_length=16, choices=ParameterFormat.choices, default=ParameterFormat.POSITIONAL
    )
    body_parameters = models.JSONField(
        default=list,
        blank=True,
        help_text="The reply's fields, in the order of the body's parameters, e.g. "
        '["customer_name", "order_reference", "total"]. Known fields: ' + ", ".join(FIELDS) + ".",
    )
    is_active = models.BooleanField(default=True, help_text="Off: replies of this kind are skipped and flagged.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["business", "kind"]
        constraints = [models.UniqueConstraint(fields=["business", "kind"], name="reply_template_one_per_kind")]

    def __str__(self) -> str:
        return f"{self.template_name} for {self.kind}"

    def clean(self) -> None:
        names = self.body_parameters
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise ValidationError({"body_parameters": 'a list of field names, e.g. ["customer_name", "total"]'})
        unknown = [name for name in names if name not in FIELDS]
        if unknown:
            raise ValidationError(
                {"body_parameters": f"unknown field(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}"}
            )
