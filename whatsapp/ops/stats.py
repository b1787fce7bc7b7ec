"""What became of the messages: one set of counts for the demo, the
pipeline_stats command, and anyone checking the database."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Manager, QuerySet

from dlq.models import DeadLetter
from leads.models import CallbackRequest, Order, ReviewFlag, SalesNotification, SupportTicket
from whatsapp.models import DuplicateDelivery, OutboundMessage, ProcessedMessage


def _by(queryset: Manager[Any] | QuerySet[Any], field: str) -> dict[str, int]:
    return {row[field]: row["n"] for row in queryset.values(field).annotate(n=Count("id")).order_by(field)}


def pipeline_stats() -> dict:
    inbox = _by(ProcessedMessage.objects, "status")
    return {
        "inbox": {status: inbox.get(status, 0) for status in ProcessedMessage.Status.values},
        "processed": inbox.get(ProcessedMessage.Status.PROCESSED, 0),
        "failed": inbox.get(ProcessedMessage.Status.FAILED, 0),
        "in_flight": sum(inbox.get(status, 0) for status in ProcessedMessage.IN_FLIGHT),
        "duplicates": DuplicateDelivery.objects.count(),
        "dead_letters": {
            "total": DeadLetter.objects.count(),
            "by_status": _by(DeadLetter.objects, "status"),
            "open_by_reason": _by(DeadLetter.objects.filter(status=DeadLetter.Status.OPEN), "reason"),
            "by_stage": _by(DeadLetter.objects, "stage"),
        },
        "orders": _by(Order.objects, "status"),
        "tickets": _by(SupportTicket.objects, "status"),
        "sales_notifications": _by(SalesNotification.objects, "status"),
        "review_flags": _by(ReviewFlag.objects, "status"),
        "callbacks": _by(CallbackRequest.objects, "status"),
        "replies": _by(OutboundMessage.objects, "status"),
    }
