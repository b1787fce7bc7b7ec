"""Ingest's hand-off in this process, on the real Postgres and Redis (no broker,
no ingest process): a batch publish cut off from Redis is an outage, and a
processing id held by another business is a conflict, not a duplicate."""

from __future__ import annotations

import pytest
from django.conf import settings

from dlq.models import DeadLetter
from tests.support.events import BUSINESS_ID, encode, event
from tests.support.proxy import FaultProxy
from whatsapp.models import DuplicateDelivery, ProcessedMessage

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_batch_publish_cut_off_from_redis_is_an_outage(redis_client):
    """kombu reports a failed batch publish as BatchPublishError (delivery uncertain); one that
    failed on the connection is an outage to wait out, not a record to dead-letter."""
    from urllib.parse import urlsplit

    from kombu import Connection

    from core.errors import is_outage

    broker = urlsplit(settings.REDIS_URL)
    proxy = FaultProxy(broker.hostname or "127.0.0.1", broker.port or 6379)
    try:
        with Connection(settings.REDIS_URL.replace(f":{broker.port or 6379}/", f":{proxy.port}/")) as connection:
            producer = connection.Producer()
            with producer.batch():
                producer.publish({"n": 1}, routing_key="outage-probe")
            proxy.cut()
            with pytest.raises(Exception) as caught, producer.batch():
                producer.publish({"n": 2}, routing_key="outage-probe")
        assert type(caught.value).__name__ == "BatchPublishError"
        assert is_outage(caught.value)
    finally:
        proxy.close()
    assert redis_client.llen("outage-probe") == 1


def test_a_processing_id_held_by_another_business_is_a_conflict_not_a_duplicate(business):
    """processing_id is unique across businesses: another business's record with it is
    dead-lettered as processing_id_conflict, kept once, and refused on requeue; the same
    business's copy is still a duplicate."""
    from dlq.requeue import RequeueRefused, requeue
    from leads.models import Business
    from tests.support.events import TENANT_ID
    from whatsapp.ingest.intake import take_in
    from whatsapp.kafka import Record

    Business.objects.create(business_id="other-shop", tenant_id=TENANT_ID, display_name="Other")
    ours = encode(event("shared-1", lead_id="lead-a"))
    theirs = encode(event("shared-1", lead_id="lead-b", business_id="other-shop"))
    first = take_in(
        [
            Record("t.conflict", 0, 1, ours),
            Record("t.conflict", 1, 1, theirs),  # the same batch
            Record("t.conflict", 0, 2, ours),
        ]
    )  # our own copy again
    later = take_in([Record("t.conflict", 2, 5, theirs)])  # a later batch
    again = take_in([Record("t.conflict", 2, 5, theirs)])  # read again after a crash

    assert (first.created, first.duplicates, dict(first.dead_lettered)) == (1, 1, {"processing_id_conflict": 1})
    assert dict(later.dead_lettered) == {"processing_id_conflict": 1} and later.duplicates == 0
    assert dict(again.dead_lettered) == {"processing_id_conflict": 1}
    assert ProcessedMessage.objects.get().business_id == BUSINESS_ID
    assert list(DuplicateDelivery.objects.values_list("kafka_partition", "kafka_offset")) == [(0, 2)]
    entries = DeadLetter.objects.order_by("kafka_partition")
    assert [(e.reason, e.stage, e.business_id, e.processing_id, e.kafka_partition) for e in entries] == [
        ("processing_id_conflict", "ingest", "other-shop", "shared-1", 1),
        ("processing_id_conflict", "ingest", "other-shop", "shared-1", 2),
    ]
    assert "another business" in entries[0].error_message
    with pytest.raises(RequeueRefused, match="processing_id_conflict"):
        requeue(entries[0].pk, by="test")
    assert DeadLetter.objects.get(pk=entries[0].pk).status == "OPEN"
