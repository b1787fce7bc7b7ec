"""CREATE_SUPPORT_TICKET: open a ticket for a complaint, linked to the order it names if we know it."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from leads.models import Order, SupportTicket
from whatsapp.actions.base import ActionContext, ActionExecutor, PermanentActionError, create_effect
from whatsapp.actions.registry import register

PRIORITY_BY_SEVERITY = {
    "low": SupportTicket.Priority.LOW,
    "medium": SupportTicket.Priority.NORMAL,
    "high": SupportTicket.Priority.HIGH,
}


@register
class CreateSupportTicket(ActionExecutor):
    name = "CREATE_SUPPORT_TICKET"

    def execute(self, context: ActionContext) -> dict[str, Any]:
        existing = SupportTicket.objects.filter(idempotency_key=context.idempotency_key).first()
        if existing is not None:
            return _result(existing)
        # A complaint with no stated severity is still a complaint: treat it as medium.
        severity = context.params.get("severity") or "medium"
        if severity not in PRIORITY_BY_SEVERITY:
            raise PermanentActionError("severity: must be one of low, medium, high")
        reference = context.params.get("order_reference")
        if reference is not None and not isinstance(reference, str):
            raise PermanentActionError("order_reference: must be a string or null")
        reference = (reference or "").strip()[:64]
        order = None
        if reference:
            # Only this business's orders: a reference must never link across tenants.
            order = Order.objects.filter(business=context.business, reference__iexact=reference).first()
        ticket = create_effect(
            SupportTicket, context, priority=PRIORITY_BY_SEVERITY[severity], order_reference=reference, order=order
        )
        return _result(ticket)

    def compensate(self, context: ActionContext, result: dict[str, Any]) -> dict[str, Any]:
        updated = SupportTicket.objects.filter(
            idempotency_key=context.idempotency_key, status=SupportTicket.Status.OPEN
        ).update(status=SupportTicket.Status.VOID, updated_at=timezone.now())
        ticket = SupportTicket.objects.filter(idempotency_key=context.idempotency_key).first()
        if ticket is None:
            return {"status": "NOT_FOUND"}
        return {"ticket_id": ticket.pk, "status": ticket.status, "voided": bool(updated)}


def _result(ticket: SupportTicket) -> dict[str, Any]:
    return {
        "ticket_id": ticket.pk,
        "priority": ticket.priority,
        "order_id": ticket.order_id,
        "order_reference": ticket.order_reference or None,
    }
