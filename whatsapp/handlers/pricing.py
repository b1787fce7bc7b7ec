"""PRICING_INQUIRY: answer from the catalog and tell sales someone is interested.

Prices come only from the catalog, never from the AI's entities, so a reply cannot quote a
price the business did not set.

Plan (requires entities.products): NOTIFY_SALES {"kind": "pricing"};
reply: "name: 6.50 USD" per known product, "name: not in our catalog" otherwise; no
escalation; lead -> CONTACTED.
"""

from __future__ import annotations

from leads.models import Lead
from whatsapp.actions.notify_sales import NotifySales
from whatsapp.contracts.result import Intent
from whatsapp.handlers import replies
from whatsapp.handlers.base import HandlerResult, IntentHandler, MessageContext, PlannedAction, resolve_product
from whatsapp.handlers.registry import register
from whatsapp.models.templates import ReplyKind

REPLIES = replies.Replies(
    {
        "en": {
            "pricing_intro": "Here are the prices at {business}:",
            "price_line": "{name}: {price}",
            "not_in_catalog": "{name}: not in our catalog",
        },
        "es": {
            "pricing_intro": "Estos son los precios en {business}:",
            "price_line": "{name}: {price}",
            "not_in_catalog": "{name}: no está en nuestro catálogo",
        },
        "pt": {
            "pricing_intro": "Estes são os preços de {business}:",
            "price_line": "{name}: {price}",
            "not_in_catalog": "{name}: não está no nosso catálogo",
        },
    }
)


@register
class PricingHandler(IntentHandler):
    intent = Intent.PRICING_INQUIRY
    priority = 0
    name = "pricing"

    def can_handle(self, context: MessageContext) -> bool:
        return bool(context.event.entities.products)

    def handle(self, context: MessageContext) -> HandlerResult:
        language = context.language
        lines = [REPLIES.render(language, "pricing_intro", business=context.business.display_name)]
        known = 0
        asked: list[str] = []
        for requested in context.event.entities.products:
            product = resolve_product(context.catalog, requested)
            asked.append(product.name if product is not None else replies.echoed_name(requested.name))
            if product is None:
                lines.append(REPLIES.render(language, "not_in_catalog", name=replies.echoed_name(requested.name)))
                continue
            known += 1
            lines.append(
                REPLIES.render(
                    language, "price_line", name=product.name, price=replies.money(product.price, product.currency)
                )
            )
        requested_count = len(context.event.entities.products)
        return HandlerResult(
            handler=self.name,
            actions=[PlannedAction(NotifySales, {"kind": "pricing"})],
            reply_text="\n".join(lines),
            lead_state=Lead.State.CONTACTED.value,
            reply_kind=ReplyKind.PRICING,
            reply_fields={"business": context.business.display_name, "products": ", ".join(asked)},
            note=f"priced {known} of {requested_count} requested product(s)",
        )
