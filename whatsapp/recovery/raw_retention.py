"""Raw webhook bodies are kept WEBHOOK_RAW_RETENTION_DAYS, then deleted (with the changes read
from them), in chunks so no delete is one long transaction. The messages and statuses the
webhook stored from them stay (their rows forget the delivery)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from whatsapp.models import InboundMessage, WebhookDelivery

CHUNK = 500


def purge_raw(*, days: float | None = None, now: datetime | None = None, chunk: int = CHUNK) -> int:
    """Delete deliveries received more than `days` ago; how many were deleted."""
    days = settings.WEBHOOK_RAW_RETENTION_DAYS if days is None else days
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(
                WebhookDelivery.objects.filter(received_at__lt=cutoff)
                .order_by("received_at")
                .values_list("pk", flat=True)[:chunk]
            )
            if not ids:
                return deleted
            InboundMessage.objects.filter(delivery_id__in=ids).update(delivery=None)
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM whatsapp_webhookchange WHERE delivery_id = ANY(%s)", [ids])
                cursor.execute("DELETE FROM whatsapp_webhookdelivery WHERE id = ANY(%s)", [ids])
                deleted += cursor.rowcount
