"""SCHEDULE_CALL: book the callback the customer asked for.

Without a time there is nothing to book, so such a message goes to review rather than to a
reply that promises a call at no particular moment.
"""
from __future__ import annotations

from leads.models import Lead
from whatsapp.contract import Intent
from whatsapp.handlers import replies
from whatsapp.handlers.base import HandlerResult, IntentHandler, MessageContext, PlannedAction
from whatsapp.handlers.registry import register


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
                PlannedAction("SCHEDULE_CALL", {"preferred_time": moment.isoformat()}),
                PlannedAction("NOTIFY_SALES", {"kind": "callback"}),
            ],
            reply_text=replies.render(context.language, "call_scheduled", business=context.business.display_name,
                                      **replies.when(moment)),
            lead_state=Lead.State.QUALIFIED.value,
            note=f"callback requested for {moment.isoformat()}",
        )
