"""The sweeper sends again the task of a stored status that was never applied
(whatsapp.recovery.sweeper)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from tests.support.statuses import meta_status, queued, replied
from whatsapp.edge import statuses as edge_statuses
from whatsapp.models import DeliveryStatus
from whatsapp.recovery import sweeper

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_sweeper_sends_again_a_status_whose_task_was_lost(shop, redis_client):
    reply = replied("order-11")
    with transaction.atomic():
        edge_statuses.record_statuses([meta_status(reply.wamid, "delivered", datetime.now(UTC))], phone_number_id="1")
    row = DeliveryStatus.objects.get(wamid=reply.wamid)
    redis_client.flushdb()  # the task was lost (Redis restarted empty, say)
    assert sweeper.redrive_statuses(timezone.now() - timedelta(minutes=5), 100) == 0, "too recent to be lost"
    DeliveryStatus.objects.filter(pk=row.pk).update(received_at=timezone.now() - timedelta(minutes=10))
    assert sweeper.redrive_statuses(timezone.now() - timedelta(minutes=5), 100) == 1
    [task] = queued(redis_client, edge_statuses.APPLY_QUEUE)
    assert b"whatsapp.apply_delivery_status" in task and f"delivery-status:{row.pk}".encode() in task
