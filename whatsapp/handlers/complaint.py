"""COMPLAINT: always open a ticket; a high-severity one also reaches a person at once.

The lead's state is left alone: a complaint says nothing about how far along the sale is.
A complaint needs no entities, because an unhappy customer must get a ticket even when the
AI could not pick out an order number.

Plan (requires nothing): CREATE_SUPPORT_TICKET {"severity": severity or
"medium", "order_reference": ref or None}; severity "high" adds FLAG_FOR_REVIEW {"reason":
"high_severity_complaint"}, then NOTIFY_SALES {"kind": "complaint"}, and escalates; reply:
apology + ticket acknowledgement; lead state left alone.
"""

from __future__ import annotations

from whatsapp.actions.create_support_ticket import CreateSupportTicket
from whatsapp.actions.flag_for_review import FlagForReview
from whatsapp.actions.notify_sales import NotifySales
from whatsapp.contracts.result import Intent
from whatsapp.handlers import replies
from whatsapp.handlers.base import HandlerResult, IntentHandler, MessageContext, PlannedAction
from whatsapp.handlers.registry import register
from whatsapp.models.templates import ReplyKind

DEFAULT_SEVERITY = "medium"


REPLIES = replies.Replies(
    {
        "en": {
            "complaint": (
                "We're very sorry about this. We've opened a support ticket and the {business} team will look into it."
            ),
            "complaint_urgent": (
                "We're very sorry about this. We've opened a support ticket marked as urgent, and the {business} team "
                "will contact you as soon as possible."
            ),
        },
        "es": {
            "complaint": (
                "Sentimos mucho lo ocurrido. Hemos abierto un ticket de soporte y el equipo de {business} lo revisará."
            ),
            "complaint_urgent": (
                "Sentimos mucho lo ocurrido. Hemos abierto un ticket de soporte marcado como urgente y el equipo de "
                "{business} se pondrá en contacto contigo lo antes posible."
            ),
        },
        "pt": {
            "complaint": (
                "Sentimos muito pelo ocorrido. Abrimos um chamado de suporte e a equipe de {business} vai analisar o "
                "caso."
            ),
            "complaint_urgent": (
                "Sentimos muito pelo ocorrido. Abrimos um chamado de suporte marcado como urgente e a equipe de "
                "{business} entrará em contato com você o quanto antes."
            ),
        },
    }
)


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
        actions = [PlannedAction(CreateSupportTicket, ticket)]
        if urgent:
            actions += [
                PlannedAction(FlagForReview, {"reason": "high_severity_complaint"}),
                PlannedAction(NotifySales, {"kind": "complaint"}),
            ]
        return HandlerResult(
            handler=self.name,
            actions=actions,
            reply_text=REPLIES.render(
                context.language, "complaint_urgent" if urgent else "complaint", business=context.business.display_name
            ),
            should_escalate=urgent,
            lead_state=None,
            note=f"{severity}-severity complaint, "
            f"{'with' if entities.order_reference else 'without'} an order reference",
            reply_kind=ReplyKind.TICKET_OPENED,
            reply_fields={"business": context.business.display_name, "severity": severity},
        )
