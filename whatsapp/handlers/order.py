"""ORDER_REQUEST: create the order only when every line is certain.

An order is the one plan that commits the business, so any doubt (a product we cannot find,
not enough stock) sends the whole request to a person instead of creating a partial order.

Plan (requires entities.products):

- every product resolves and has stock >= its quantity (default 1): CREATE_ORDER
  {"lines": [{"sku", "quantity"}]}, then NOTIFY_SALES {"kind": "order"}; reply: items, line
  amounts, total + currency; no escalation; lead -> CONVERTED.
- else: FLAG_FOR_REVIEW {"reason": "unknown_product" | "out_of_stock", "skus"}; reply: a
  person will confirm; escalate; lead -> QUALIFIED; no order.
"""

from __future__ import annotations

from decimal import Decimal

from leads.models import Lead, Product
from whatsapp.actions.create_order import CreateOrder
from whatsapp.actions.flag_for_review import FlagForReview
from whatsapp.actions.notify_sales import NotifySales
from whatsapp.contracts.result import Intent
from whatsapp.handlers import replies
from whatsapp.handlers.base import HandlerResult, IntentHandler, MessageContext, PlannedAction, resolve_product
from whatsapp.handlers.registry import register
from whatsapp.models.templates import ReplyKind

UNKNOWN_PRODUCT = "unknown_product"
OUT_OF_STOCK = "out_of_stock"


REPLIES = replies.Replies(
    {
        "en": {
            "order_confirmed": (
                "Thanks for your order with {business}!\n{lines}\nTotal: {total}\nWe'll let you know when it's ready."
            ),
            "order_line": "- {quantity} x {name}: {amount}",
            "order_review": (
                "Thanks for your order request with {business}! A member of our team will confirm your order with you "
                "shortly."
            ),
        },
        "es": {
            "order_confirmed": (
                "¡Gracias por tu pedido en {business}!\n{lines}\nTotal: {total}\nTe avisaremos cuando esté listo."
            ),
            "order_line": "- {quantity} x {name}: {amount}",
            "order_review": (
                "¡Gracias por tu pedido en {business}! Una persona de nuestro equipo te confirmará el pedido en breve."
            ),
        },
        "pt": {
            "order_confirmed": (
                "Obrigado pelo seu pedido em {business}!\n{lines}\nTotal: {total}\nAvisaremos quando estiver pronto."
            ),
            "order_line": "- {quantity} x {name}: {amount}",
            "order_review": (
                "Obrigado pelo seu pedido em {business}! Uma pessoa da nossa equipe vai confirmar o pedido com você em "
                "breve."
            ),
        },
    }
)


@register
class OrderHandler(IntentHandler):
    intent = Intent.ORDER_REQUEST
    priority = 0
    name = "order"

    def can_handle(self, context: MessageContext) -> bool:
        return bool(context.event.entities.products)

    def handle(self, context: MessageContext) -> HandlerResult:
        # The same product asked for twice is one line, and stock is checked against the sum.
        quantities: dict[str, int] = {}
        products: dict[str, Product] = {}
        unknown: list[str] = []
        for requested in context.event.entities.products:
            product = resolve_product(context.catalog, requested)
            if product is None:
                unknown.append(requested.sku or requested.name)
                continue
            products[product.sku] = product
            quantities[product.sku] = quantities.get(product.sku, 0) + (requested.quantity or 1)

        if unknown:
            return self._review(context, UNKNOWN_PRODUCT, list(dict.fromkeys(unknown)))
        short = [sku for sku, quantity in quantities.items() if products[sku].stock < quantity]
        if short:
            return self._review(context, OUT_OF_STOCK, short)

        lines: list[str] = []
        items: list[str] = []
        totals: dict[str, Decimal] = {}
        for sku, quantity in quantities.items():
            product = products[sku]
            amount = product.price * quantity
            totals[product.currency] = totals.get(product.currency, Decimal("0")) + amount
            items.append(f"{quantity} x {product.name}")
            lines.append(
                REPLIES.render(
                    context.language,
                    "order_line",
                    quantity=quantity,
                    name=product.name,
                    amount=replies.money(amount, product.currency),
                )
            )
        total = " + ".join(replies.money(amount, currency) for currency, amount in totals.items())
        return HandlerResult(
            handler=self.name,
            actions=[
                PlannedAction(CreateOrder, {"lines": [{"sku": sku, "quantity": n} for sku, n in quantities.items()]}),
                PlannedAction(NotifySales, {"kind": "order"}),
            ],
            reply_text=REPLIES.render(
                context.language,
                "order_confirmed",
                business=context.business.display_name,
                lines="\n".join(lines),
                total=total,
            ),
            lead_state=Lead.State.CONVERTED.value,
            note=f"order of {len(quantities)} product(s), all in catalog and in stock; total {total}",
            reply_kind=ReplyKind.ORDER_CONFIRMED,
            reply_fields={"business": context.business.display_name, "products": ", ".join(items), "total": total},
        )

    def _review(self, context: MessageContext, reason: str, skus: list[str]) -> HandlerResult:
        return HandlerResult(
            handler=self.name,
            actions=[PlannedAction(FlagForReview, {"reason": reason, "skus": skus})],
            reply_text=REPLIES.render(context.language, "order_review", business=context.business.display_name),
            should_escalate=True,
            lead_state=Lead.State.QUALIFIED.value,
            note=f"order not created: {reason} for {len(skus)} product(s)",
            reply_kind=ReplyKind.ORDER_REVIEW,
            reply_fields={"business": context.business.display_name},
        )
