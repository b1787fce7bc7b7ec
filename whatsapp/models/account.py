"""What Meta tells us beyond messages: every webhook change as it came, the state of each
message template, and notices about the WhatsApp account (restricted, disabled, a messaging
limit lowered, quality dropped).

Every change of a signed delivery is kept with its field, so nothing Meta sends is dropped
silently; the fields the product uses are applied where they are stored (the webhook's
transaction), the rest stay STORED and counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import models, transaction
from django.utils import timezone


class WebhookChange(models.Model):
    """One `entry[].changes[]` item of a signed delivery."""

    class State(models.TextChoices):
        APPLIED = "APPLIED", "applied"
        # A field the product does not use: kept and counted, nothing else.
        STORED = "STORED", "stored only"
        # Not a change we could read (no field, a value of the wrong shape): kept with the reason.
        UNREADABLE = "UNREADABLE", "could not be read"

    delivery = models.ForeignKey("whatsapp.WebhookDelivery", on_delete=models.CASCADE, related_name="changes")
    field = models.CharField(max_length=64, db_index=True)
    json_path = models.CharField(max_length=200)
    # The WhatsApp Business Account (entry.id) and, for fields that carry one, the number.
    waba_id = models.CharField(max_length=64, blank=True)
    phone_number_id = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=16, choices=State.choices)
    reason = models.TextField(blank=True)
    # The change's value, except for `messages` (its messages and statuses have rows of their own).
    value = models.JSONField(null=True, blank=True)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.field} ({self.state}) in delivery {self.delivery_id}"


class MessageTemplateQuerySet(models.QuerySet["MessageTemplate"]):
    def apply_listing(self, waba_id: str, listed: Iterable[dict[str, Any]]) -> dict[str, int]:
        """Make the account's rows what Meta's listing (GET /{waba-id}/message_templates) says,
        in one transaction: each listed template created or updated; a stored one Meta no
        longer lists marked DELETED (never sent again). Counts per outcome."""
        counts = {"created": 0, "updated": 0, "unchanged": 0, "deleted": 0, "unreadable": 0}
        seen: set[tuple[str, str]] = set()
        with transaction.atomic():
            stored = {(t.name, t.language): t for t in self.select_for_update().filter(waba_id=waba_id)}
            for item in listed:
                name, language = str(item.get("name") or "")[:512], str(item.get("language") or "")[:16]
                if not name or not language:
                    counts["unreadable"] += 1
                    continue
                seen.add((name, language))
                quality = item.get("quality_score")
                values: dict[str, Any] = {
                    "template_id": str(item.get("id") or "")[:64],
                    "status": str(item.get("status") or "")[:32],
                    "category": str(item.get("category") or "")[:32],
                    "quality": str(quality.get("score") or "")[:32] if isinstance(quality, dict) else "",
                    "reason": str(item.get("rejected_reason") or "")[:200],
                    "components": item.get("components") if isinstance(item.get("components"), list) else [],
                }
                template = stored.get((name, language))
                if template is None:
                    self.create(waba_id=waba_id, name=name, language=language, **values)
                    counts["created"] += 1
                elif any(getattr(template, key) != value for key, value in values.items()):
                    for key, value in values.items():
                        setattr(template, key, value)
                    template.save()
                    counts["updated"] += 1
                else:
                    counts["unchanged"] += 1
            gone = [t.pk for key, t in stored.items() if key not in seen and t.status != "DELETED"]
            counts["deleted"] = self.filter(pk__in=gone).update(
                status="DELETED", reason="no longer listed by Meta", updated_at=timezone.now()
            )
        return counts

    def refused(self, waba_id: str, name: str, language: str, status: str) -> int:
        """Meta refused a send because the template is `status` (PAUSED, DISABLED) before its
        webhook told us: record it, so the next reply skips it instead of failing again."""
        return self.filter(waba_id=waba_id, name=name, language=language).update(
            status=status, reason="refused by Meta when sent", updated_at=timezone.now()
        )


class MessageTemplate(models.Model):
    """A message template as Meta last reported it: approval status, quality and category per
    name and language. Only an APPROVED template can be sent."""

    waba_id = models.CharField("WhatsApp Business Account id", max_length=64)
    name = models.CharField(max_length=512)
    language = models.CharField(max_length=16)
    template_id = models.CharField("Meta's template id", max_length=64, blank=True)
    status = models.CharField(max_length=32, blank=True, db_index=True)
    reason = models.CharField(max_length=200, blank=True)
    quality = models.CharField(max_length=32, blank=True)
    category = models.CharField(max_length=32, blank=True)
    # Its header, body, footer and buttons as `manage.py templates sync` last read them.
    components = models.JSONField(default=list, blank=True)
    # Meta's last words on it (the change's value), for the admin.
    last_update = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = MessageTemplateQuerySet.as_manager()

    class Meta:
        ordering = ["waba_id", "name", "language"]
        constraints = [
            models.UniqueConstraint(fields=["waba_id", "name", "language"], name="template_unique_per_account")
        ]

    def __str__(self) -> str:
        return f"{self.name} [{self.language}] {self.status or '?'}"

    @property
    def sendable(self) -> bool:
        return self.status == "APPROVED"


class AccountNoticeQuerySet(models.QuerySet["AccountNotice"]):
    def open(self) -> AccountNoticeQuerySet:
        return self.filter(acknowledged_at__isnull=True)

    def serious_first(self) -> AccountNoticeQuerySet:
        return self.order_by(
            models.Case(
                *(models.When(severity=level, then=rank) for rank, level in enumerate(AccountNotice.SEVERITIES)),
                default=len(AccountNotice.SEVERITIES),
            ),
            "-received_at",
        )


class AccountNotice(models.Model):
    """Something Meta said of the WhatsApp account or number (account_update, account_alerts,
    phone_number_quality_update, business_capability_update). A restricted or disabled
    account, or a lowered messaging limit, is the first thing an operator must see: the
    overview lists the open ones, most serious first, until someone acknowledges them."""

    class Severity(models.TextChoices):
        CRITICAL = "critical"
        WARNING = "warning"
        INFO = "info"

    SEVERITIES = ("critical", "warning", "info")

    waba_id = models.CharField("WhatsApp Business Account id", max_length=64, blank=True)
    business = models.ForeignKey(
        "leads.Business", on_delete=models.SET_NULL, null=True, blank=True, related_name="account_notices"
    )
    field = models.CharField(max_length=64)
    event = models.CharField(max_length=64, blank=True)
    severity = models.CharField(max_length=16, choices=Severity.choices, db_index=True)
    summary = models.CharField(max_length=300)
    detail = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=150, blank=True)

    objects = AccountNoticeQuerySet.as_manager()

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.severity}: {self.summary}"

    def acknowledge(self, by: str) -> None:
        self.acknowledged_at = timezone.now()
        self.acknowledged_by = by[:150]
        self.save(update_fields=["acknowledged_at", "acknowledged_by"])

    def as_overview(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "summary": self.summary,
            "field": self.field,
            "event": self.event,
            "business": self.business.business_id if self.business else "",
            "received_at": self.received_at.isoformat(),
        }
