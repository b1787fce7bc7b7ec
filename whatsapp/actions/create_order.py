"""CREATE_ORDER: price the requested lines from the catalog, take the stock, write the order."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import OperationalError, transaction
from django.db.models import F

from leads.models import Order, OrderLine, Product
from whatsapp.actions.base import ActionContext, ActionExecutor, PermanentActionError
from whatsapp.actions.registry import register

CENTS = Decimal("0.01")


@register
class CreateOrder(ActionExecutor):
    name = "CREATE_ORDER"
    # A deadlock or lost connection while taking stock is transient; the rolled-back step can run again.
    retryable = (OperationalError,)

    def execute(self, context: ActionContext) -> dict[str, Any]:
        existing = Order.objects.filter(idempotency_key=context.idempotency_key).first()
        if existing is not None:
            return _result(existing)
        requested = _parse_lines(context.params)
        # All lines or none: a refused line undoes the stock taken for the lines before it.
        # Inside the saga's transaction this joins it (no savepoint: an error rolls the whole
        # step back, and a caller cannot commit half an order); alone, it is a transaction.
        # A concurrent run of the same step that wins the unique key makes this raise
        # IntegrityError, and the saga finds the step done by the winner.
        with transaction.atomic(savepoint=False):
            return _result(_create(context, requested))

    def compensate(self, context: ActionContext, result: dict[str, Any]) -> dict[str, Any]:
        with transaction.atomic():
            order = Order.objects.select_for_update().filter(idempotency_key=context.idempotency_key).first()
            if order is None:
                return {"status": "NOT_FOUND"}
            if order.status == Order.Status.CANCELLED:
                return {"order_id": order.pk, "status": order.status, "restocked": False}
            for line in order.lines.order_by("product_id"):
                Product.objects.filter(pk=line.product_id).update(stock=F("stock") + line.quantity)
            order.status = Order.Status.CANCELLED
            order.save(update_fields=["status", "updated_at"])
            return {"order_id": order.pk, "status": order.status, "restocked": True}


def _parse_lines(params: dict[str, Any]) -> list[tuple[str, int]]:
    lines = params.get("lines")
    if not isinstance(lines, list) or not lines:
        raise PermanentActionError("CREATE_ORDER needs a non-empty 'lines' list")
    parsed: list[tuple[str, int]] = []
    for index, line in enumerate(lines):
        sku = line.get("sku") if isinstance(line, dict) else None
        quantity = line.get("quantity") if isinstance(line, dict) else None
        if not isinstance(sku, str) or not sku:
            raise PermanentActionError(f"lines.{index}.sku: must be a non-empty string")
        if type(quantity) is not int or quantity < 1:
            raise PermanentActionError(f"lines.{index}.quantity: must be a positive integer")
        parsed.append((sku, quantity))
    return parsed


def _create(context: ActionContext, requested: list[tuple[str, int]]) -> Order:
    catalog = {p.sku: p for p in Product.objects.filter(business=context.business, sku__in=[s for s, _ in requested])}
    unknown = sorted({sku for sku, _ in requested if sku not in catalog})
    if unknown:
        raise PermanentActionError(f"unknown SKU for this business: {', '.join(unknown)}")
    currencies = {catalog[sku].currency for sku, _ in requested}
    if len(currencies) > 1:
        raise PermanentActionError(f"order lines are priced in several currencies: {', '.join(sorted(currencies))}")

    # Take stock in product-id order so two orders for the same products cannot deadlock.
    for sku, quantity in sorted(requested, key=lambda item: catalog[item[0]].pk):
        taken = Product.objects.filter(pk=catalog[sku].pk, stock__gte=quantity).update(stock=F("stock") - quantity)
        if not taken:
            raise PermanentActionError(f"insufficient stock for SKU {sku} (wanted {quantity})")

    order = Order.objects.create(
        processing_id=context.processing_id,
        saga_run=context.saga_run,
        idempotency_key=context.idempotency_key,
        business=context.business,
        lead=context.lead,
        currency=currencies.pop(),
    )
    lines = [
        OrderLine(
            order=order,
            product=catalog[sku],
            sku=sku,
            name=catalog[sku].name,
            quantity=quantity,
            unit_price=catalog[sku].price,
            line_total=catalog[sku].price * quantity,
        )
        for sku, quantity in requested
    ]
    OrderLine.objects.bulk_create(lines)
    order.reference = Order.reference_for(order.pk)
    order.total = sum((line.line_total for line in lines), Decimal("0"))
    order.save(update_fields=["reference", "total", "updated_at"])
    return order


def _result(order: Order) -> dict[str, Any]:
    return {
        "order_id": order.pk,
        "reference": order.reference,
        "total": str(order.total.quantize(CENTS)),
        "currency": order.currency,
    }
