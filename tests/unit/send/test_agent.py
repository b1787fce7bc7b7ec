"""An agent's reply (whatsapp.send.agent) on the bot's path, against a local server playing the
Graph API: sent once with the agent's text, refused outside the window without a request,
dead-lettered at stage reply with who wrote it, and a failed delivery status for it
dead-letters it too (whatsapp.saga.statuses), though no pipeline run stands behind it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from dlq.models import DeadLetter
from dlq.requeue import RequeueRefused, requeue
from leads.models import Lead
from tests.support.statuses import apply_all, failed, store
from whatsapp.models import OutboundMessage
from whatsapp.send import agent

pytestmark = pytest.mark.django_db(transaction=True)
Status = OutboundMessage.Status


@pytest.fixture
def ana(transactional_db):
    return User.objects.create_user("ana", is_staff=True)


@pytest.fixture
def lead(shop):
    return Lead.objects.create(lead_id="ld.agent1", business=shop, wa_id="15550123456", last_inbound_at=timezone.now())


def typed(lead: Lead, by: User, text: str = "Your loaves are ready, Ana from the bakery") -> OutboundMessage:
    return OutboundMessage.objects.agent_reply(business=lead.business, lead=lead, text=text, by=by)


def messages_posted(httpserver) -> list[dict]:
    return [request.get_json() for request, _ in httpserver.log if request.get_json().get("type") == "text"]


def test_the_agents_reply_is_sent_once_with_their_text(lead, ana, httpserver):
    row = typed(lead, ana)
    sent = agent.send(row.pk)
    assert sent.status == Status.SENT and sent.wamid == f"wamid.{row.processing_id}.1"
    assert sent.attempts == 1 and sent.sent_by == ana
    (body,) = messages_posted(httpserver)
    assert body["to"] == "15550123456" and body["text"]["body"] == "Your loaves are ready, Ana from the bakery"
    assert body["biz_opaque_callback_data"] == row.processing_id
    assert agent.send(row.pk).status == Status.SENT
    assert len(messages_posted(httpserver)) == 1, "a redelivered task sends nothing twice"


def test_outside_the_window_it_is_skipped_without_a_request(lead, ana, httpserver):
    row = typed(lead, ana)
    Lead.objects.filter(pk=lead.pk).update(last_inbound_at=timezone.now() - timedelta(hours=25))
    assert agent.send(row.pk).status == Status.SKIPPED_WINDOW_CLOSED
    assert messages_posted(httpserver) == []


def test_without_a_number_it_is_refused_for_good_and_dead_lettered_once_with_who(lead, ana, httpserver):
    row = typed(lead, ana)
    type(lead.business).objects.filter(pk=lead.business_id).update(phone_number_id="")
    with pytest.raises(agent.AgentReplyRefused, match="no WhatsApp phone-number id"):
        agent.send(row.pk)
    entry = agent.dead_letter(row.pk, reason=DeadLetter.Reason.NON_RETRYABLE, error="AgentReplyRefused: no number")
    assert entry is not None
    assert entry.stage == DeadLetter.Stage.REPLY and entry.processing_id == row.processing_id
    assert entry.lead_id == "ld.agent1" and entry.business_id == lead.business.business_id
    assert entry.saga_state["by"] == "ana" and entry.saga_state["agent_reply"] == row.pk
    assert agent.dead_letter(row.pk, reason=DeadLetter.Reason.NON_RETRYABLE, error="again") is None
    assert messages_posted(httpserver) == []
    with pytest.raises(RequeueRefused, match="an agent's reply"):
        requeue(entry.pk, by="ops")
    entry.refresh_from_db()
    assert entry.status == DeadLetter.Status.OPEN, "refused, the entry stays open for the operator to resolve"


def test_a_failed_delivery_status_dead_letters_the_agents_reply(lead, ana):
    sent = agent.send(typed(lead, ana).pk)
    outcome = apply_all(store(failed(sent.wamid, timezone.now(), 131026, "Message undeliverable")))
    assert outcome == ["applied"]
    sent.refresh_from_db()
    assert sent.status == Status.FAILED and sent.delivery_status == "failed"
    (entry,) = DeadLetter.objects.filter(processing_id=sent.processing_id)
    assert entry.reason == DeadLetter.Reason.DELIVERY_FAILED and entry.stage == DeadLetter.Stage.REPLY
    assert "131026" in entry.error_message and entry.saga_state["by"] == "ana"
