"""SCHEDULE_CALL: book the callback the customer asked for.

Without a time there is nothing to book, so such a message goes to review rather than to a
reply that promises a call at no particular moment.

Plan (requires entities.preferred_time): SCHEDULE_CALL
{"preferred_time": ISO string}, then NOTIFY_SALES {"kind": "callback"}; reply: "on 2026-11-27
at 15:00 (UTC+01:00)"; no escalation; lead -> QUALIFIED.
"""

from __future__ import annotations

from leads.models import Lead
from whatsapp.actions.notify_sales import NotifySales
from whatsapp.actions.schedule_call import ScheduleCall
from whatsapp.contracts.result import Intent
from whatsapp.handlers import replies
from whatsapp.handlers.base import HandlerResult, IntentHandler, MessageContext, PlannedAction
from whatsapp.handlers.registry import register
from whatsapp.models.templates import ReplyKind

REPLIES = replies.Replies(
    {
        "en": {
            "call_scheduled": "Great! {business} will call you on {date} at {time} ({offset}).",
        },
        "es": {
            "call_scheduled": "¡Perfecto! {business} te llamará el {date} a las {time} ({offset}).",
        },
        "pt": {
            "call_scheduled": "Perfeito! {business} vai ligar para você em {date} às {time} ({offset}).",
        },
    }
)


@register
class ScheduleCallHandler(IntentHandler):
    intent = Intent.SCHEDULE_CALL
    priority = 0
    name = "schedule_call"

    def can_handle(self, context: MessageContext) -> bool:
        return context.event.entities.preferred_time is not None

    def handle(self, context: MessageContext) -> HandlerResult:
        moment = context.event.entities.preferred_time
        assert moment is not None  # can_handle guarantees it
        return HandlerResult(
            handler=self.name,
            actions=[
                PlannedAction(ScheduleCall, {"preferred_time": moment.isoformat()}),
                PlannedAction(NotifySales, {"kind": "callback"}),
            ],
            reply_text=REPLIES.render(
                context.language, "call_scheduled", business=context.business.display_name, **replies.when(moment)
            ),
            lead_state=Lead.State.QUALIFIED.value,
            note=f"callback requested for {moment.isoformat()}",
            reply_kind=ReplyKind.CALL_SCHEDULED,
            reply_fields={"business": context.business.display_name, **replies.when(moment)},
        )
