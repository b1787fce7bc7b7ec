"""NOTIFY_SALES: tell the business's sales system about a lead, through its webhook if it has one.

The POST is made with no database transaction open (the executor is not
`transactional`): a receiver that takes its full deadline must not hold the saga
step's row lock, nor keep a connection "idle in transaction" for that long. So the
notification row carries the idempotency itself:

    (no row) --INSERT, committed--> SENDING --POST ok--> SENT       (committed; never POSTed again)
                                            \\--POST failed--> (row deleted; the retry starts over)
                                    SKIPPED                         (the business has no webhook)

HTTP is not transactional, so two guards stand in for one: a committed SENT row means
"never POST this key again", and the Idempotency-Key header lets the receiver drop the
repeat that happens when we crash after the POST but before our commit. A row still
SENDING means another worker is posting right now (wait), or one died mid-POST long
ago (post again: the receiver drops the repeat by its key).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from core.clients import webhook
from leads.models import Order, SalesNotification
from whatsapp.actions.base import (
    ActionContext,
    ActionExecutor,
    PermanentActionError,
    RetryableActionError,
    atomic_if_nested,
)
from whatsapp.actions.registry import register

EVENT_NAME = "sales.notification"
# Added to the webhook deadline: how long a SENDING row may legitimately be in flight.
IN_FLIGHT_MARGIN_SECONDS = 30.0

Status = SalesNotification.Status


class NotificationInFlight(RetryableActionError):
    """Another worker is posting this notification right now; look again once it has finished."""

    health_signal = False  # says nothing about the receiver's health


@register
class NotifySales(ActionExecutor):
    name = "NOTIFY_SALES"
    queue = "webhooks"
    transactional = False

    def execute(self, context: ActionContext) -> dict[str, Any]:
        kind = context.params.get("kind")
        if kind not in SalesNotification.Kind.values:
            raise PermanentActionError(f"kind: must be one of {', '.join(SalesNotification.Kind.values)}")
        notification = _claim(context, kind)
        if notification.status != Status.SENDING:
            return _result(notification)  # SENT or SKIPPED already
        try:
            response = webhook.post_json(
                notification.webhook_url,
                notification.payload,
                idempotency_key=context.idempotency_key,
                secret=context.business.sales_webhook_secret,
            )
        except BaseException:
            # Not delivered, or delivered and dropped by the receiver as a repeat next time:
            # either way the retry starts from scratch, as if this attempt had never claimed it.
            SalesNotification.objects.filter(pk=notification.pk, status=Status.SENDING).delete()
            raise
        notification.status = Status.SENT
        notification.http_status = response.status_code
        SalesNotification.objects.filter(pk=notification.pk).update(
            status=Status.SENT, http_status=response.status_code, updated_at=timezone.now()
        )
        return _result(notification)

    def compensate(self, context: ActionContext, result: dict[str, Any]) -> dict[str, Any]:
        notification = SalesNotification.objects.filter(idempotency_key=context.idempotency_key).first()
        if notification is None:
            return {"status": "NOT_FOUND"}
        if notification.status in (Status.RETRACTED, Status.SKIPPED):
            # Already retracted, or nothing was ever sent: nothing to undo.
            return _retraction_result(notification)
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
        except PermanentActionError:
            # Kept so an operator can see which retractions need a human.
            SalesNotification.objects.filter(pk=notification.pk).update(
                status=Status.RETRACTION_FAILED, attempts=F("attempts") + 1, updated_at=timezone.now()
            )
            raise
        SalesNotification.objects.filter(pk=notification.pk).update(
            status=Status.RETRACTED,
            http_status=response.status_code,
            attempts=F("attempts") + 1,
            updated_at=timezone.now(),
        )
        notification.status = Status.RETRACTED
        return _retraction_result(notification)


def _claim(context: ActionContext, kind: str) -> SalesNotification:
    """This step's row, committed before any POST: new as SENDING (or SKIPPED without a
    webhook), or the existing one, taken over if a dead worker left it SENDING."""
    now = timezone.now()
    url = context.business.sales_webhook_url
    try:
        with atomic_if_nested():
            return SalesNotification.objects.create(
                processing_id=context.processing_id,
                saga_run=context.saga_run,
                idempotency_key=context.idempotency_key,
                business=context.business,
                lead=context.lead,
                kind=kind,
                webhook_url=url,
                payload=_payload(context, kind, now),
                status=Status.SENDING if url else Status.SKIPPED,
                attempts=1 if url else 0,
            )
    except IntegrityError:
        pass
    with transaction.atomic():
        notification = SalesNotification.objects.select_for_update().get(idempotency_key=context.idempotency_key)
        if notification.status == Status.SENDING:
            if now - notification.updated_at < _in_flight_limit():
                raise NotificationInFlight(
                    f"notification {context.idempotency_key} is being sent by another worker",
                    retry_after=_in_flight_limit().total_seconds(),
                )
        elif notification.status != Status.PENDING:
            return notification
        notification.status = Status.SENDING
        notification.attempts += 1
        notification.save(update_fields=["status", "attempts", "updated_at"])
        return notification


def _in_flight_limit() -> timedelta:
    deadline = float(getattr(settings, "SALES_WEBHOOK_DEADLINE_SECONDS", webhook.DEFAULT_DEADLINE_SECONDS))
    return timedelta(seconds=deadline + IN_FLIGHT_MARGIN_SECONDS)


def _payload(context: ActionContext, kind: str, now: datetime) -> dict[str, Any]:
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
        "created_at": now.isoformat(),
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
