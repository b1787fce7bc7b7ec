"""Storing Meta's delivery statuses as the webhook does (whatsapp.edge.statuses), on the real
test Postgres and Redis: a redelivery absorbed, what is not a status skipped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction

from tests.support.statuses import PHONE_NUMBER_ID, meta_status, metric, replied, seconds
from whatsapp.edge import statuses as edge_statuses
from whatsapp.models import DeliveryStatus
from whatsapp.saga import statuses as saga_statuses

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_redelivered_status_is_absorbed_and_applying_twice_changes_nothing(shop):
    reply = replied("order-3")
    at = datetime.now(UTC) - timedelta(minutes=1)
    with transaction.atomic():
        delivered = [meta_status(reply.wamid, "delivered", at)]
        assert edge_statuses.record_statuses(delivered, phone_number_id=PHONE_NUMBER_ID)
    with transaction.atomic():
        # Meta sends the same notification again (and twice in one body).
        again = [meta_status(reply.wamid, "delivered", at)] * 2
        assert edge_statuses.record_statuses(again, phone_number_id=PHONE_NUMBER_ID) == 0
    [row] = DeliveryStatus.objects.filter(wamid=reply.wamid)
    assert saga_statuses.apply(row.pk) == "applied"
    assert saga_statuses.apply(row.pk) == "applied"  # a Celery redelivery of the task: already settled
    reply.refresh_from_db()
    assert reply.delivery_status == "delivered" and reply.delivered_at == seconds(at)


def test_statuses_that_are_not_statuses_are_skipped_and_unranked_ones_kept(shop):
    before = metric("other", "invalid")
    with transaction.atomic():
        n = edge_statuses.record_statuses(
            [{"status": "sent"}, "junk", {"id": "wamid.x", "status": "deleted", "timestamp": "soon"}],
            phone_number_id=PHONE_NUMBER_ID,
        )
    assert n == 1 and metric("other", "invalid") == before + 2
    row = DeliveryStatus.objects.get(wamid="wamid.x")
    assert row.occurred_at is None and row.raw["timestamp"] == "soon"
    assert saga_statuses.apply(row.pk) == "ignored"
