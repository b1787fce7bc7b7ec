"""The webhook fields other than `messages`, applied where they are stored.

- template status, quality and category updates: the template's row (per account, name and
  language), which decides what may be sent outside the 24-hour window;
- `user_preferences`: a customer's stop or resume of marketing messages, on their lead;
- `user_id_update`: a customer's new BSUID, on their lead;
- `account_update`, `account_alerts`, `phone_number_quality_update`,
  `business_capability_update`: an account notice on the business, for the overview.

Anything else Meta sends is stored and counted (STORED), never dropped silently. Each
function returns the change's state and a reason; none raises for what Meta sent (an odd
value is a reason, not a refused delivery).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone

from leads.models import Business, CustomerIds, Lead, LeadActivity, is_bsuid
from whatsapp.edge.webhook.payload import Change
from whatsapp.edge.webhook.reading import list_at, optional_id
from whatsapp.models import AccountNotice, MessageTemplate, WebhookChange

APPLIED, STORED, UNREADABLE = WebhookChange.State.APPLIED, WebhookChange.State.STORED, WebhookChange.State.UNREADABLE
Outcome = tuple[str, str]

# The fields a metric label may name; anything else is counted as "other".
KNOWN_FIELDS = frozenset(
    {
        "messages",
        "message_template_status_update",
        "message_template_quality_update",
        "message_template_components_update",
        "template_category_update",
        "user_preferences",
        "user_id_update",
        "account_update",
        "account_alerts",
        "account_review_update",
        "phone_number_quality_update",
        "phone_number_name_update",
        "business_capability_update",
        "business_status_update",
        "security",
        "flows",
        "history",
        "smb_message_echoes",
        "smb_app_state_sync",
        "calls",
        "partner_solutions",
        "payment_configuration_update",
    }
)

_CRITICAL_ACCOUNT_EVENTS = {"ACCOUNT_RESTRICTION", "ACCOUNT_VIOLATION", "DISABLED_UPDATE", "ACCOUNT_DELETED"}
_QUALITY_SEVERITY = {"DOWNGRADE": "critical", "FLAGGED": "warning"}
_ALERT_SEVERITY = {"CRITICAL": "critical", "WARNING": "warning"}


def label_for(field: str) -> str:
    return field if field in KNOWN_FIELDS else "other"


def apply_change(change: Change, business_for: Callable[[Change], Business | None]) -> Outcome:
    handler = _HANDLERS.get(change.field)
    if handler is None or change.value is None:
        return STORED, ""
    return handler(change, change.value, business_for)


# Template events that say nothing of whether it may be sent (editing locked, the account's
# template limit): the stored status stays. And the ones that put it back in use: Meta's own
# listing then says APPROVED, and so does the stored row, or a reinstated template would be
# skipped until the next `templates sync`.
_NOT_A_STATUS = frozenset({"LOCKED", "UNLOCKED", "LIMIT_EXCEEDED"})
_BACK_TO_APPROVED = frozenset({"REINSTATED", "UNARCHIVED"})


def _template_status(change: Change, value: dict[str, Any], _: Callable) -> Outcome:
    event = optional_id(value, "event", max_chars=32).upper()
    if not event:
        return UNREADABLE, "value.event is missing"  # the stored status stays, rather than blanked
    template = _template(change, value)
    if template is None:
        return UNREADABLE, "message_template_name or message_template_language is missing"
    if event in _BACK_TO_APPROVED:
        template.status = "APPROVED"
    elif event not in _NOT_A_STATUS:
        template.status = event
    template.reason = str(value.get("reason") or "")[:200]
    template.save()
    return APPLIED, ""


def _template_quality(change: Change, value: dict[str, Any], _: Callable) -> Outcome:
    template = _template(change, value)
    if template is None:
        return UNREADABLE, "message_template_name or message_template_language is missing"
    template.quality = optional_id(value, "new_quality_score", max_chars=32)
    template.save()
    return APPLIED, ""


def _template_category(change: Change, value: dict[str, Any], _: Callable) -> Outcome:
    template = _template(change, value)
    if template is None:
        return UNREADABLE, "message_template_name or message_template_language is missing"
    template.category = optional_id(value, "new_category", max_chars=32)
    template.save()
    return APPLIED, ""


def _template(change: Change, value: dict[str, Any]) -> MessageTemplate | None:
    name = optional_id(value, "message_template_name", max_chars=512)
    # Meta's reference shows the webhook's code as "en-US"; its listing and the send take
    # "en_US". One row per template and language: a PAUSED "en-US" must pause the "en_US" row.
    language = optional_id(value, "message_template_language", max_chars=16).replace("-", "_")
    if not name or not language:
        return None
    template, _ = MessageTemplate.objects.select_for_update().get_or_create(
        waba_id=change.waba_id, name=name, language=language
    )
    template_id = value.get("message_template_id")
    if template_id is not None:
        template.template_id = str(template_id)[:64]
    template.last_update = {"field": change.field, **value}
    return template


def _user_preferences(change: Change, value: dict[str, Any], business_for: Callable) -> Outcome:
    business = business_for(change)
    if business is None:
        return STORED, "no single active business has this phone-number id"
    items = value.get("user_preferences")
    if not isinstance(items, list):
        return UNREADABLE, "value.user_preferences must be a list"
    applied = 0
    for item in items:
        if not isinstance(item, dict) or item.get("category") != "marketing_messages":
            continue
        choice = item.get("value")
        if choice not in ("stop", "resume"):
            continue
        ids = _customer(item, value)
        if not ids.wa_id and not ids.user_id:
            continue
        lead = Lead.objects.identify(business, ids).lead
        stopped = choice == "stop"
        lead.marketing_stopped_at = _meta_time(item.get("timestamp")) if stopped else None
        lead.save(update_fields=["marketing_stopped_at", "updated_at"])
        LeadActivity.objects.create(
            lead=lead,
            kind="marketing_stopped" if stopped else "marketing_resumed",
            detail={"source": "user_preferences"},
        )
        applied += 1
    return (APPLIED, "") if applied else (STORED, "no marketing preference in the change")


def _user_id_update(change: Change, value: dict[str, Any], business_for: Callable) -> Outcome:
    business = business_for(change)
    if business is None:
        return STORED, "no single active business has this phone-number id"
    items = value.get("user_id_update")
    if not isinstance(items, list):
        return UNREADABLE, "value.user_id_update must be a list"
    applied = 0
    for item in items:
        if not isinstance(item, dict):
            continue
        ids_field = item.get("user_id")
        previous = current = ""
        if isinstance(ids_field, dict):
            previous = optional_id(ids_field, "previous", max_chars=140)
            current = optional_id(ids_field, "current", max_chars=140)
        previous = previous or optional_id(item, "previous_user_id", max_chars=140)
        current = (
            current
            or optional_id(item, "new_user_id", max_chars=140)
            or optional_id(item, "current_user_id", max_chars=140)
        )
        if not is_bsuid(current):
            continue
        ids = CustomerIds(
            wa_id=_number(optional_id(item, "wa_id", max_chars=32)), user_id=previous if is_bsuid(previous) else ""
        )
        if not ids.wa_id and not ids.user_id:
            continue
        if Lead.objects.change_identifiers(business, ids, new_user_id=current, source="user_id_update"):
            applied += 1
    return (APPLIED, "") if applied else (STORED, "no known customer in the change")


def _account_notice(change: Change, value: dict[str, Any], business_for: Callable) -> Outcome:
    event, severity, summary = _describe(change.field, value)
    AccountNotice.objects.create(
        waba_id=change.waba_id,
        business=business_for(change),
        field=change.field,
        event=event[:64],
        severity=severity,
        summary=summary[:300],
        detail=value,
    )
    return APPLIED, ""


def _describe(field: str, value: dict[str, Any]) -> tuple[str, str, str]:
    """The notice's event, severity and one line an operator reads first."""
    if field == "account_update":
        event = optional_id(value, "event", max_chars=64)
        ban = value.get("ban_info")
        ban_state = str(ban.get("waba_ban_state") or "") if isinstance(ban, dict) else ""
        # DISABLED_UPDATE also tells of a reinstated account: good news, not an alarm.
        reinstated = event == "DISABLED_UPDATE" and ban_state == "REINSTATE"
        severity = "critical" if event in _CRITICAL_ACCOUNT_EVENTS and not reinstated else "info"
        restrictions = value.get("restriction_info")
        kinds = (
            [str(r.get("restriction_type")) for r in restrictions if isinstance(r, dict)]
            if isinstance(restrictions, list)
            else []
        )
        extra = f": {', '.join(kinds)}" if kinds else ""
        if ban_state:
            extra += f" (ban state {ban_state})"
        violation = value.get("violation_info")
        if isinstance(violation, dict) and violation.get("violation_type"):
            extra += f" (violation {violation.get('violation_type')})"
        return event, severity, f"Account update {event or '(no event)'}{extra}"
    if field == "account_alerts":
        # Meta nests the alert in alert_info (beside the entity it is about); read it flat too.
        nested = value.get("alert_info")
        alert = nested if isinstance(nested, dict) else value
        severity = _ALERT_SEVERITY.get(str(alert.get("alert_severity", "")).upper(), "info")
        event = optional_id(alert, "alert_type", max_chars=64)
        description = str(alert.get("alert_description") or "")
        return event, severity, f"Account alert {event}: {description}".rstrip(": ")
    if field == "phone_number_quality_update":
        event = optional_id(value, "event", max_chars=64)
        # current_limit goes in February 2026; max_daily_conversations_per_business replaces it.
        limit = (
            value.get("max_daily_conversations_per_business")
            or value.get("current_limit")
            or value.get("messaging_limit_tier")
            or ""
        )
        severity = _QUALITY_SEVERITY.get(event, "info")
        return event, severity, f"Phone number quality {event or 'update'}; messaging limit now {limit or 'unknown'}"
    limits = ", ".join(f"{key} {val}" for key, val in value.items() if key.startswith("max_"))
    return "", "info", f"Business capability update: {limits or 'no limits named'}"


def _customer(item: dict[str, Any], value: dict[str, Any]) -> CustomerIds:
    wa_id = _number(optional_id(item, "wa_id", max_chars=32))
    user_id = optional_id(item, "user_id", max_chars=140)
    if not is_bsuid(user_id):
        user_id = ""
    contacts = list_at(value, "contacts")
    if not user_id and len(contacts) == 1 and isinstance(contacts[0], dict):
        candidate = optional_id(contacts[0], "user_id", max_chars=140)
        user_id = candidate if is_bsuid(candidate) else ""
    return CustomerIds(wa_id=wa_id, user_id=user_id)


def _number(value: str) -> str:
    return value if value.isascii() and value.isdigit() and 7 <= len(value) <= 15 else ""


def _meta_time(value: Any) -> datetime:
    try:
        return datetime.fromtimestamp(int(str(value)), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return timezone.now()


_HANDLERS: dict[str, Callable[[Change, dict[str, Any], Callable], Outcome]] = {
    "message_template_status_update": _template_status,
    "message_template_quality_update": _template_quality,
    "template_category_update": _template_category,
    "user_preferences": _user_preferences,
    "user_id_update": _user_id_update,
    "account_update": _account_notice,
    "account_alerts": _account_notice,
    "phone_number_quality_update": _account_notice,
    "business_capability_update": _account_notice,
}
