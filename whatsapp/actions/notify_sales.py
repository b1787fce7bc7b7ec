"""NOTIFY_SALES: tell the business's sales system about a lead, through its webhook if it has one.

HTTP is not transactional, so two guards stand in for one: a committed SENT row means
"never POST this key again", and the Idempotency-Key header lets the receiver drop the
repeat that happens when we crash after the POST but before our commit.
"""
from __future__ import annotations

from typing import Any

import requests
from django.db import IntegrityError, transaction
from django.utils import timezone

from leads.models import Order, SalesNotification
from whatsapp.actions.base import ActionContext, ActionExecutor, PermanentActionError
from whatsapp.actions.registry import executors
from whatsapp.clients import webhook

EVENT_NAME = "sales.notification"


@executors.register("NOTIFY_SALES")
class NotifySales(ActionExecutor):
    name = "NOTIFY_SALES"
    queue = "webhooks"
    # The client already turns these into RetryableActionError; listed in case a caller uses requests directly.
    retryable = (requests.Timeout, requests.ConnectionError)

    def execute(self, context: ActionContext) -> dict[str, Any]:
        existing = SalesNotification.objects.filter(idempotency_key=context.idempotency_key).first()
        if existing is not None and existing.status != SalesNotification.Status.PENDING:
            return _result(existing)
        kind = context.params.get("kind")
        if kind not in SalesNotification.Kind.values:
            raise PermanentActionError(f"kind: must be one of {', '.join(SalesNotification.Kind.values)}")

        # Our own savepoint: a failed POST leaves no row behind, even if the caller commits.
        with transaction.atomic():
            notification = _claim(context, kind)
            if notification.status != SalesNotification.Status.PENDING:
                return _result(notification)  # a concurrent run of this step got there first
            if not notification.webhook_url:
                notification.status = SalesNotification.Status.SKIPPED
                notification.save(update_fields=["status", "updated_at"])
                return _result(notification)
            notification.attempts += 1
            response = webhook.post_json(
                notification.webhook_url,
                notification.payload,
                idempotency_key=context.idempotency_key,
                secret=context.business.sales_webhook_secret,
            )
            notification.status = SalesNotification.Status.SENT
            notification.http_status = response.status_code
            notification.save(update_fields=["status", "http_status", "attempts", "updated_at"])
            return _result(notification)

    def compensate(self, context: ActionContext, result: dict[str, Any]) -> dict[str, Any]:
        failure: PermanentActionError | None = None
        with transaction.atomic():
            notification = (
                SalesNotification.objects.select_for_update().filter(idempotency_key=context.idempotency_key).first()
            )
            if notification is None:
                return {"status": "NOT_FOUND"}
            if notification.status in (SalesNotification.Status.RETRACTED, SalesNotification.Status.SKIPPED):
                # Already retracted, or nothing was ever sent: nothing to undo.
                return _retraction_result(notification)
            notification.attempts += 1
            try:
                response = webhook.post_json(
                    notification.webhook_url,
                    {
                        "type": "retraction",
                        "event": EVENT_NAME,
                        "idempotency_key": context.idempotency_key,
                        "processing_id": context.processing_id,
                        "business_id": context.business.business_id,
                    },
                    idempotency_key=f"{context.idempotency_key}:retract",
                    secret=context.business.sales_webhook_secret,
                )
            except PermanentActionError as exc:
                # Kept (if the caller commits) so an operator can see which retractions need a human.
                notification.status = SalesNotification.Status.RETRACTION_FAILED
                notification.save(update_fields=["status", "attempts", "updated_at"])
                failure = exc
            else:
                notification.status = SalesNotification.Status.RETRACTED
                notification.http_status = response.status_code
                notification.save(update_fields=["status", "http_status", "attempts", "updated_at"])
                return _retraction_result(notification)
        # Raised outside the savepoint, which would otherwise roll the RETRACTION_FAILED mark back.
        assert failure is not None
        raise failure


def _claim(context: ActionContext, kind: str) -> SalesNotification:
    """The row for this step, locked; created PENDING with its payload if it is new."""
    try:
        with transaction.atomic():
            notification = SalesNotification.objects.create(
                processing_id=context.processing_id,
                saga_run=context.saga_run,
                idempotency_key=context.idempotency_key,
                business=context.business,
                lead=context.lead,
                kind=kind,
                webhook_url=context.business.sales_webhook_url,
            )
    except IntegrityError:
        return SalesNotification.objects.select_for_update().get(idempotency_key=context.idempotency_key)
    notification.payload = _payload(context, kind, notification)
    notification.save(update_fields=["payload"])
    return notification


def _payload(context: ActionContext, kind: str, notification: SalesNotification) -> dict[str, Any]:
    """What the sales system needs to act: ids and the order summary, never the message text or phone number."""
    order = (
        Order.objects.filter(
            business=context.business,
            processing_id=context.processing_id,
            saga_run=context.saga_run,
            status=Order.Status.CREATED,
        )
        .order_by("id")
        .first()
    )
    return {
        "type": "notification",
        "event": EVENT_NAME,
        "idempotency_key": context.idempotency_key,
        "processing_id": context.processing_id,
        "business_id": context.business.business_id,
        "lead_id": context.lead.lead_id,
        "kind": kind,
        "intent": context.event.intent.value,
        "order": None
        if order is None
        else {"reference": order.reference, "total": str(order.total), "currency": order.currency},
        "created_at": (notification.created_at or timezone.now()).isoformat(),
    }


def _result(notification: SalesNotification) -> dict[str, Any]:
    return {
        "notification_id": notification.pk,
        "status": notification.status,
        "kind": notification.kind,
        "http_status": notification.http_status,
    }


def _retraction_result(notification: SalesNotification) -> dict[str, Any]:
    return {"notification_id": notification.pk, "status": notification.status}
