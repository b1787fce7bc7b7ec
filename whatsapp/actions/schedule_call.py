"""SCHEDULE_CALL: record that the customer wants a call back at a given time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.utils import timezone as django_timezone

from leads.models import CallbackRequest
from whatsapp.actions.base import ActionContext, ActionExecutor, PermanentActionError, create_effect
from whatsapp.actions.registry import register


@register
class ScheduleCall(ActionExecutor):
    name = "SCHEDULE_CALL"

    def execute(self, context: ActionContext) -> dict[str, Any]:
        existing = CallbackRequest.objects.filter(idempotency_key=context.idempotency_key).first()
        if existing is not None:
            return _result(existing)
        preferred_time = _parse_time(context.params.get("preferred_time"))
        callback = create_effect(CallbackRequest, context, preferred_time=preferred_time)
        return _result(callback)

    def compensate(self, context: ActionContext, result: dict[str, Any]) -> dict[str, Any]:
        updated = CallbackRequest.objects.filter(
            idempotency_key=context.idempotency_key, status=CallbackRequest.Status.REQUESTED
        ).update(status=CallbackRequest.Status.CANCELLED, updated_at=django_timezone.now())
        callback = CallbackRequest.objects.filter(idempotency_key=context.idempotency_key).first()
        if callback is None:
            return {"status": "NOT_FOUND"}
        return {"callback_id": callback.pk, "status": callback.status, "cancelled": bool(updated)}


def _parse_time(value: Any) -> datetime:
    """A time without an offset is refused: guessing the customer's zone could move the call by hours."""
    if not isinstance(value, str) or not value:
        raise PermanentActionError("preferred_time: must be an ISO-8601 datetime string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PermanentActionError("preferred_time: not a valid ISO-8601 datetime") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise PermanentActionError("preferred_time: must include a timezone offset")
    return parsed


def _result(callback: CallbackRequest) -> dict[str, Any]:
    # In UTC, so a repeat (read back from the database) returns exactly what the first run did.
    return {"callback_id": callback.pk, "preferred_time": callback.preferred_time.astimezone(UTC).isoformat()}
