"""A result answers a request: on a real broker, ingest and worker, results that name another
business's message, invent a processing_id for a business that takes results only for its
webhook's messages, or are dated next year are dead letters with their reason and run
nothing, while the stored message's own result runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dlq.models import DeadLetter
from leads.models import Business, Lead, Order
from tests.support import kafka, meta
from tests.support.events import encode, event
from tests.support.processes import wait_until
from whatsapp.contracts.request import processing_id_for
from whatsapp.edge.webhook.payload import parse_delivery
from whatsapp.edge.webhook.store import store_delivery
from whatsapp.models import InboundMessage, ProcessedMessage

pytestmark = pytest.mark.django_db(transaction=True)


def test_results_that_do_not_answer_their_request_are_dead_letters_and_run_nothing(
    business, topic, bootstrap, start_ingest, start_worker
):
    business.phone_number_id = meta.PHONE_NUMBER_ID
    business.replies_enabled = False  # the saga's actions are what is checked, not the reply
    business.save()
    strict = Business.objects.create(
        business_id="strict-shop", tenant_id="tenant-strict", display_name="Strict", accepts_direct_results=False
    )
    message = meta.text_message("2 sourdough loaves please", sender="15550004444")
    body = meta.encode(meta.message_delivery(message))
    store_delivery(body, parse_delivery(body))
    stored = InboundMessage.objects.get()
    pid = processing_id_for(message["id"])
    customer = {"wa_id": "15550004444", "name": "Ana"}
    sent_at = datetime.fromtimestamp(int(message["timestamp"]), UTC)

    own = event(
        pid,
        lead_id=stored.lead_id,
        customer=customer,
        message={"text": "2 sourdough", "received_at": (sent_at - timedelta(hours=3)).isoformat()},
    )
    other_business = event(pid, business_id="strict-shop", tenant_id="tenant-strict", lead_id="l-1", customer=customer)
    other_customer = event(pid, lead_id="l-2", customer={"wa_id": "15550005555"})
    invented = event("invented-1", business_id="strict-shop", tenant_id="tenant-strict", lead_id="l-3")
    next_year = event("direct-1", lead_id="l-4")
    next_year["message"]["received_at"] = (datetime.now(UTC) + timedelta(days=365)).isoformat()
    kafka.produce(
        bootstrap, topic, [(None, encode(e)) for e in (other_business, other_customer, invented, next_year, own)]
    )

    start_worker()
    proc = start_ingest(topic, "--idle-exit", "5")
    assert proc.wait(180) == 0, proc.output()[-3000:]
    wait_until(
        lambda: ProcessedMessage.objects.filter(processing_id=pid, status="PROCESSED").exists(),
        timeout=90,
        message="the stored message's own result processed",
    )
    letters = {(d.processing_id, d.business_id): (d.reason, d.error_message) for d in DeadLetter.objects.all()}
    assert letters == {
        (pid, "strict-shop"): (
            "request_mismatch",
            "business_id: the message with this processing_id was routed to another business, not 'strict-shop'",
        ),
        (pid, business.business_id): (
            "request_mismatch",
            "customer: not the customer who sent the message with this processing_id",
        ),
        ("invented-1", "strict-shop"): (
            "request_mismatch",
            (
                "processing_id: no message the webhook stored has it, and business 'strict-shop' accepts results "
                "only for those"
            ),
        ),
        ("direct-1", business.business_id): (
            "invalid_payload",
            "message.received_at: more than 5 minutes in the future",
        ),
    }
    assert ProcessedMessage.objects.count() == 1, "nothing else ran"
    assert not Lead.objects.filter(business=strict).exists() and Order.objects.count() == 1
    lead = Lead.objects.get(lead_id=stored.lead_id)
    assert lead.last_inbound_at == sent_at, "the stored message's time, not the record's"
