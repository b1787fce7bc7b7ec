"""COMPLAINT: always open a ticket; a high-severity one also reaches a person at once.

The lead's state is left alone: a complaint says nothing about how far along the sale is.
A complaint needs no entities, because an unhappy customer must get a ticket even when the
AI could not pick out an order number.
"""
from __future__ import annotations

from whatsapp.contract import Intent
from whatsapp.handlers import replies
from whatsapp.handlers.base import HandlerResult, IntentHandler, MessageContext, PlannedAction
from whatsapp.handlers.registry import register

DEFAULT_SEVERITY = "medium"


@register
class ComplaintHandler(IntentHandler):
    intent = Intent.COMPLAINT
    priority = 0
    name = "complaint"

    def can_handle(self, context: MessageContext) -> bool:
        return True

    def handle(self, context: MessageContext) -> HandlerResult:
        entities = context.event.entities
        severity = entities.severity or DEFAULT_SEVERITY
        urgent = severity == "high"
        ticket = {"severity": severity, "order_reference": entities.order_reference}
        actions = [PlannedAction("CREATE_SUPPORT_TICKET", ticket)]
        if urgent:
            actions += [
                PlannedAction("FLAG_FOR_REVIEW", {"reason": "high_severity_complaint"}),
                PlannedAction("NOTIFY_SALES", {"kind": "complaint"}),
            ]
        return HandlerResult(
            handler=self.name,
            actions=actions,
            reply_text=replies.render(context.language, "complaint_urgent" if urgent else "complaint",
                                      business=context.business.display_name),
            should_escalate=urgent,
            lead_state=None,
            note=f"{severity}-severity complaint, "
                 f"{'with' if entities.order_reference else 'without'} an order reference",
        )
