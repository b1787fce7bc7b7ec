"""Taking a conversation over, through the real loop (Kafka, ingest, a Celery worker) to the
stand-in Cloud API (devtools.standin), driven from the inbox's own forms (inbox.views):

- while an agent holds the conversation, the customer's next message runs its actions (the
  order is made) and the stand-in receives no reply: the reply row is SKIPPED_AGENT and keeps
  the bot's text, which the thread's JSON shows;
- the agent's typed reply goes out through the worker (inbox.send_agent_reply), reaches the
  stand-in marked as the agent's, and Meta's delivered and read status webhooks (POSTed
  signed to the real webhook view) tick it on the thread;
- handed back, the next message gets the bot's reply again."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.contrib.auth.models import Group
from django.urls import reverse

from devtools.standin import StandInCloudApi
from leads.models import Lead, LeadActivity, Order
from tests.support import kafka, meta
from tests.support.events import encode, event, now_iso
from tests.support.processes import wait_until
from tests.support.webhook import post_signed
from whatsapp.models import OutboundMessage, ProcessedMessage

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TOKEN = "EAAG-inbox-integration-token"
CUSTOMER = "15550147000"
AGENT_TEXT = "Hi, this is Ana from the bakery: I have set two loaves aside for you."


@pytest.fixture
def stand_in():
    api = StandInCloudApi().start()
    yield api
    api.stop()


@pytest.fixture
def shop(business, webhook_secrets, stand_in, bootstrap, topic, start_ingest, start_worker):
    business.phone_number_id = meta.PHONE_NUMBER_ID
    business.waba_id = meta.WABA_ID
    business.save()
    start_worker(env={"WHATSAPP_GRAPH_BASE_URL": stand_in.url, "WHATSAPP_ACCESS_TOKEN": TOKEN})
    start_ingest(topic)
    return business


@pytest.fixture
def agent(django_user_model):
    # The groups inbox/migrations/0002_groups makes (a transactional test's flush empties them).
    importlib.import_module("inbox.migrations.0002_groups").make_groups(apps, None)
    user = django_user_model.objects.create_user("ana", "ana@example.com", "pw", is_staff=True)
    user.groups.add(Group.objects.get(name="agents"))
    return user


def write(bootstrap, topic, pid: str, text: str, intent: str = "ORDER_REQUEST") -> ProcessedMessage:
    """The customer's message as the AI service's result event; its run, once PROCESSED."""
    body = event(
        pid,
        lead_id="lead-inbox",
        message_id=f"wamid.{pid}",
        customer={"wa_id": CUSTOMER, "name": "Carla"},
        message={"text": text, "received_at": now_iso(minutes_ago=0.5)},
        intent=intent,
    )
    kafka.produce(bootstrap, topic, [(b"lead-inbox", encode(body))])
    wait_until(
        lambda: ProcessedMessage.objects.filter(processing_id=pid, status="PROCESSED").exists(),
        timeout=90,
        message=f"{pid} to be PROCESSED",
    )
    return ProcessedMessage.objects.get(processing_id=pid)


def sent_to_customer(stand_in: StandInCloudApi) -> list:
    return [sent for sent in stand_in.sent() if sent.to == CUSTOMER]


def act(client, lead: Lead, action: str, **data) -> list[str]:
    url = reverse("inbox:act", args=[lead.business.business_id, lead.lead_id])
    response = client.post(url, {"action": action, **data}, follow=True)
    assert response.status_code == 200
    return [str(m) for m in response.context["messages"]]


def thread(client, lead: Lead) -> dict:
    response = client.get(reverse("inbox:thread-data", args=[lead.business.business_id, lead.lead_id]))
    assert response.status_code == 200
    return response.json()


def test_taken_over_the_bot_stays_quiet_the_agent_answers_with_ticks_and_handed_back_the_bot_answers(
    shop, client, agent, stand_in, bootstrap, topic
):
    first = write(bootstrap, topic, "inbox-1", "Do you have sourdough?", intent="PRICING_QUESTION")
    lead = Lead.objects.get(pk=first.lead_record_id)
    wait_until(lambda: len(sent_to_customer(stand_in)) == 1, timeout=30, message="the bot's first reply")
    client.force_login(agent)

    assert act(client, lead, "take_over")[0].startswith("You hold this conversation")
    second = write(bootstrap, topic, "inbox-2", "2 sourdough loaves please")

    assert Order.objects.filter(processing_id="inbox-2").count() == 1, "the actions still run"
    held = OutboundMessage.objects.get(processing_id="inbox-2")
    assert held.status == OutboundMessage.Status.SKIPPED_AGENT
    assert held.body == second.reply_text and "sourdough" in held.body.lower()
    assert len(sent_to_customer(stand_in)) == 1, "the stand-in got no reply while the agent held it"
    shown = [i for i in thread(client, lead)["items"] if i["kind"] == "bot_reply" and i["status"] == "SKIPPED_AGENT"]
    assert [i["text"] for i in shown] == [held.body], "the page shows what the bot would have said"

    assert act(client, lead, "reply", text=AGENT_TEXT)[0].startswith("Reply queued")
    wait_until(lambda: len(sent_to_customer(stand_in)) == 2, timeout=30, message="the agent's reply at the stand-in")
    typed = sent_to_customer(stand_in)[-1]
    assert typed.text == AGENT_TEXT
    row = OutboundMessage.objects.get(processing_id=typed.processing_id)
    assert row.sent_by == agent and row.status == OutboundMessage.Status.SENT and row.wamid == typed.wamid

    for status in ("delivered", "read"):
        assert post_signed(client, meta.status_delivery(meta.status(typed.wamid, status, recipient=CUSTOMER))) == 200
        wait_until(
            lambda status=status: OutboundMessage.objects.get(pk=row.pk).delivery_status == status,
            timeout=30,
            message=f"the agent's reply to be {status}",
        )
    (mine,) = [i for i in thread(client, lead)["items"] if i["kind"] == "agent_reply"]
    assert mine["by"] == "ana" and mine["ticks"] == "read" and mine["text"] == AGENT_TEXT

    assert act(client, lead, "hand_back")[0].startswith("Handed back")
    third = write(bootstrap, topic, "inbox-3", "And one more loaf please")
    wait_until(lambda: len(sent_to_customer(stand_in)) == 3, timeout=30, message="the bot's reply after hand back")
    last = sent_to_customer(stand_in)[-1]
    assert last.processing_id == "inbox-3" and last.text == third.reply_text
    assert OutboundMessage.objects.get(processing_id="inbox-3").sent_by is None

    history = [
        (a.kind, a.detail.get("by"))
        for a in LeadActivity.objects.filter(lead=lead, kind__in=["taken_over", "agent_replied", "handed_back"])
    ]
    assert history == [("taken_over", "ana"), ("agent_replied", "ana"), ("handed_back", "ana")]
