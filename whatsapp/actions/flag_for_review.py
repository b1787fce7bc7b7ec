"""FLAG_FOR_REVIEW: ask a human to look at the lead, and keep lead.needs_review true while any flag is open."""

from __future__ import annotations

from typing import Any

from django.db import OperationalError, transaction
from django.utils import timezone

from leads.models import Lead, ReviewFlag
from whatsapp.actions.base import ActionContext, ActionExecutor, PermanentActionError, create_effect
from whatsapp.actions.registry import register


@register
class FlagForReview(ActionExecutor):
    name = "FLAG_FOR_REVIEW"
    # A deadlock or lost connection while locking the lead is transient.
    retryable = (OperationalError,)

    def execute(self, context: ActionContext) -> dict[str, Any]:
        existing = ReviewFlag.objects.filter(idempotency_key=context.idempotency_key).first()
        if existing is not None:
            return _result(existing)
        reason = context.params.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise PermanentActionError("reason: must be a non-empty string")
        detail = {key: value for key, value in context.params.items() if key != "reason"}
        with transaction.atomic(savepoint=False):
            # The lead's row first (the update locks it), as compensate locks it first, so a
            # clear and a new flag on the same lead are ordered and needs_review ends up
            # matching the open flags.
            Lead.objects.filter(pk=context.lead.pk).update(needs_review=True, updated_at=timezone.now())
            flag = create_effect(ReviewFlag, context, reason=reason.strip()[:100], detail=detail)
        context.lead.needs_review = True
        return _result(flag)

    def compensate(self, context: ActionContext, result: dict[str, Any]) -> dict[str, Any]:
        with transaction.atomic():
            Lead.objects.select_for_update().filter(pk=context.lead.pk).first()
            flag = ReviewFlag.objects.select_for_update().filter(idempotency_key=context.idempotency_key).first()
            if flag is None:
                return {"status": "NOT_FOUND"}
            if flag.status == ReviewFlag.Status.CLEARED:
                return {"flag_id": flag.pk, "status": flag.status, "needs_review": _needs_review(context)}
            flag.status = ReviewFlag.Status.CLEARED
            flag.save(update_fields=["status", "updated_at"])
            # Another open flag (from this or another message) still wants a human.
            still_open = ReviewFlag.objects.filter(lead_id=flag.lead_id, status=ReviewFlag.Status.OPEN).exists()
            if not still_open:
                Lead.objects.filter(pk=flag.lead_id).update(needs_review=False, updated_at=timezone.now())
                context.lead.needs_review = False
            return {"flag_id": flag.pk, "status": flag.status, "needs_review": still_open}


def _needs_review(context: ActionContext) -> bool:
    return Lead.objects.filter(pk=context.lead.pk).values_list("needs_review", flat=True).first() or False


def _result(flag: ReviewFlag) -> dict[str, Any]:
    return {"flag_id": flag.pk, "reason": flag.reason}
