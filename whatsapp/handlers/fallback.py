"""Everything a person should look at: unknown intents, low confidence, missing entities.

The reply is a fixed acknowledgement and never repeats the customer's text, because this is
exactly the path where we do not understand what they wrote.

Plan (for UNKNOWN and review; requires nothing): FLAG_FOR_REVIEW
{"reason": "unknown_intent" | "low_confidence" | "missing_entities", "intent": the event's
intent}; reply: the fixed acknowledgement below; escalate; lead state left alone.
"""

from __future__ import annotations

from whatsapp.actions.flag_for_review import FlagForReview
from whatsapp.contracts.result import Intent
from whatsapp.handlers import replies
from whatsapp.handlers.base import HandlerResult, IntentHandler, MessageContext, PlannedAction
from whatsapp.handlers.registry import FALLBACK, register
from whatsapp.models.templates import ReplyKind

UNKNOWN_INTENT = "unknown_intent"
LOW_CONFIDENCE = "low_confidence"
MISSING_ENTITIES = "missing_entities"


def review_reason(context: MessageContext) -> str:
    """Why the message was routed here, checked in the order registry.select checks it."""
    if context.event.intent is Intent.UNKNOWN:
        return UNKNOWN_INTENT
    if context.below_threshold:
        return LOW_CONFIDENCE
    return MISSING_ENTITIES


REPLIES = replies.Replies(
    {
        "en": {
            "acknowledgement": "Thanks for your message! A member of our team will get back to you shortly.",
        },
        "es": {
            "acknowledgement": "¡Gracias por tu mensaje! Una persona de nuestro equipo te responderá en breve.",
        },
        "pt": {
            "acknowledgement": "Obrigado pela sua mensagem! Uma pessoa da nossa equipe responderá em breve.",
        },
    }
)


@register
class FallbackHandler(IntentHandler):
    intent = Intent.UNKNOWN
    priority = -1000
    name = FALLBACK

    def can_handle(self, context: MessageContext) -> bool:
        return True

    def handle(self, context: MessageContext) -> HandlerResult:
        reason = review_reason(context)
        intent = context.event.intent.value
        threshold = context.business.threshold_for(intent)
        return HandlerResult(
            handler=self.name,
            actions=[PlannedAction(FlagForReview, {"reason": reason, "intent": intent})],
            reply_text=REPLIES.render(context.language, "acknowledgement"),
            should_escalate=True,
            lead_state=None,
            note=f"{reason}: {intent} at confidence {context.event.confidence:.2f} (threshold {threshold:.2f})",
            reply_kind=ReplyKind.FOLLOW_UP,
            reply_fields={"business": context.business.display_name},
        )
