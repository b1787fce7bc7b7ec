"""What a deployment's own plugin looks like: one module, loaded by naming it in the
WHATSAPP_PLUGINS setting, with no edit to the whatsapp package.

A loyalty member who asks about prices (the AI found a `loyalty_card` among the entities)
gets a stamp on their card and a thank-you instead of the price list. The stamp is an entry
in the lead's history (LeadActivity), so this action needs no model of its own; the entry
is append-only, so taking the stamp back is a second entry, as in a ledger.
"""

from __future__ import annotations

from typing import Any

from leads.models import LeadActivity
from whatsapp.actions.base import ActionContext, ActionExecutor
from whatsapp.actions.registry import register as register_action
from whatsapp.contracts.result import Intent
from whatsapp.handlers import replies
from whatsapp.handlers.base import HandlerResult, IntentHandler, MessageContext, PlannedAction
from whatsapp.handlers.registry import register

STAMPED = "loyalty_stamp"
UNSTAMPED = "loyalty_stamp_removed"


@register_action
class StampLoyaltyCard(ActionExecutor):
    name = "STAMP_LOYALTY_CARD"

    def execute(self, context: ActionContext) -> dict[str, Any]:
        # Transactional (the default): the entry commits with the saga step, and a redelivered
        # task finds it by the step's idempotency key.
        return {"activity_id": _entry(context, STAMPED, stamps=int(context.params.get("stamps", 1))).pk}

    def compensate(self, context: ActionContext, result: dict[str, Any]) -> dict[str, Any]:
        return {"activity_id": _entry(context, UNSTAMPED).pk}


def _entry(context: ActionContext, kind: str, **detail: Any) -> LeadActivity:
    existing = LeadActivity.objects.filter(
        lead=context.lead, kind=kind, detail__idempotency_key=context.idempotency_key
    ).first()
    if existing is not None:
        return existing
    return LeadActivity.objects.create(
        lead=context.lead,
        kind=kind,
        processing_id=context.processing_id,
        detail={"idempotency_key": context.idempotency_key, **detail},
    )


REPLIES = replies.Replies(
    {
        "en": {"stamped": "Thanks for being a member! {business} has added a stamp to your loyalty card."},
        "es": {"stamped": "¡Gracias por ser socio! {business} ha añadido un sello a tu tarjeta de fidelidad."},
    }
)


@register
class LoyaltyHandler(IntentHandler):
    intent = Intent.PRICING_INQUIRY
    priority = 50  # ahead of the built-in pricing handler, for members only
    name = "loyalty"

    def can_handle(self, context: MessageContext) -> bool:
        return bool((context.event.entities.model_extra or {}).get("loyalty_card"))

    def handle(self, context: MessageContext) -> HandlerResult:
        return HandlerResult(
            handler=self.name,
            actions=[PlannedAction(StampLoyaltyCard, {"stamps": 1})],
            reply_text=REPLIES.render(context.language, "stamped", business=context.business.display_name),
            note="loyalty member: one stamp",
        )
