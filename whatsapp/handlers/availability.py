"""AVAILABILITY_INQUIRY: answer from the catalog's stock; nothing for anyone to do.

No action is planned because a stock question commits nobody; if the customer then orders,
the order handler checks stock again at that point.

Plan (requires entities.products): no action; reply per product
"in stock (N available)", "out of stock" or not in our catalog; no escalation; lead -> CONTACTED.
"""

from __future__ import annotations

from leads.models import Lead
from whatsapp.contracts.result import Intent
from whatsapp.handlers import replies
from whatsapp.handlers.base import HandlerResult, IntentHandler, MessageContext, resolve_product
from whatsapp.handlers.registry import register
from whatsapp.models.templates import ReplyKind

REPLIES = replies.Replies(
    {
        "en": {
            "availability_intro": "Here's what {business} has right now:",
            "in_stock": "{name}: in stock ({count} available)",
            "out_of_stock": "{name}: out of stock",
            "not_in_catalog": "{name}: not in our catalog",
        },
        "es": {
            "availability_intro": "Esto es lo que {business} tiene ahora mismo:",
            "in_stock": "{name}: disponible ({count} en existencia)",
            "out_of_stock": "{name}: agotado",
            "not_in_catalog": "{name}: no está en nuestro catálogo",
        },
        "pt": {
            "availability_intro": "Veja o que {business} tem agora:",
            "in_stock": "{name}: disponível ({count} em estoque)",
            "out_of_stock": "{name}: esgotado",
            "not_in_catalog": "{name}: não está no nosso catálogo",
        },
    }
)


@register
class AvailabilityHandler(IntentHandler):
    intent = Intent.AVAILABILITY_INQUIRY
    priority = 0
    name = "availability"

    def can_handle(self, context: MessageContext) -> bool:
        return bool(context.event.entities.products)

    def handle(self, context: MessageContext) -> HandlerResult:
        language = context.language
        lines = [REPLIES.render(language, "availability_intro", business=context.business.display_name)]
        in_stock = 0
        asked: list[str] = []
        for requested in context.event.entities.products:
            product = resolve_product(context.catalog, requested)
            asked.append(product.name if product is not None else replies.echoed_name(requested.name))
            if product is None:
                lines.append(REPLIES.render(language, "not_in_catalog", name=replies.echoed_name(requested.name)))
            elif product.stock > 0:
                in_stock += 1
                lines.append(REPLIES.render(language, "in_stock", name=product.name, count=product.stock))
            else:
                lines.append(REPLIES.render(language, "out_of_stock", name=product.name))
        requested_count = len(context.event.entities.products)
        return HandlerResult(
            handler=self.name,
            actions=[],
            reply_text="\n".join(lines),
            lead_state=Lead.State.CONTACTED.value,
            reply_kind=ReplyKind.AVAILABILITY,
            reply_fields={"business": context.business.display_name, "products": ", ".join(asked)},
            note=f"{in_stock} of {requested_count} requested product(s) in stock",
        )
