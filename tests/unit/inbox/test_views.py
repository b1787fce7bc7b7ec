"""The inbox's pages and JSON endpoints (inbox.views): staff only, the agents group's rights
(view, take over, reply; no DLQ requeue), the list's filters and order, the thread's items
in time order, and the forms' answers. Real Postgres; the reply's task goes to real Redis."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from dlq.models import DeadLetter
from leads.models import Business, Lead, LeadActivity
from whatsapp.models import OutboundMessage, ProcessedMessage, SagaStep
from whatsapp.models.outbound import AGENT_REPLY_PREFIX

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def agent(django_user_model, groups):
    user = django_user_model.objects.create_user("ana", "ana@example.com", "pw", is_staff=True)
    user.groups.add(Group.objects.get(name="agents"))
    return user


@pytest.fixture
def other_agent(django_user_model, groups):
    user = django_user_model.objects.create_user("bo", "bo@example.com", "pw", is_staff=True)
    user.groups.add(Group.objects.get(name="agents"))
    return user


@pytest.fixture
def lead(business):
    return Lead.objects.create(
        lead_id="ld.inbox1", business=business, wa_id="15550001111", customer_name="Ana", last_inbound_at=timezone.now()
    )


def thread_url(lead: Lead, name: str = "inbox:thread") -> str:
    return reverse(name, args=[lead.business.business_id, lead.lead_id])


def act(client, lead: Lead, action: str, **data):
    response = client.post(thread_url(lead, "inbox:act"), {"action": action, **data}, follow=True)
    assert response.redirect_chain == [(thread_url(lead), 302)]
    return [str(m) for m in response.context["messages"]]


def test_only_staff_with_the_view_permission_see_the_pages(client, django_user_model, lead):
    urls = [reverse("inbox:list"), reverse("inbox:list-data"), thread_url(lead), thread_url(lead, "inbox:thread-data")]
    for url in urls:
        assert client.get(url).status_code == 302, "anonymous: to the login page"
    client.force_login(django_user_model.objects.create_user("customer", "c@example.com", "pw"))
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response.url, "not staff: to the login page"
    client.force_login(django_user_model.objects.create_user("intern", "i@example.com", "pw", is_staff=True))
    for url in urls:
        assert client.get(url).status_code == 403, "staff without inbox.view_conversation"
    assert client.post(thread_url(lead, "inbox:act"), {"action": "take_over"}).status_code == 403
    assert not Lead.objects.get(pk=lead.pk).is_taken_over()


def test_agents_may_view_take_over_and_reply_but_not_requeue_dead_letters(agent):
    assert agent.has_perm("inbox.view_conversation")
    assert agent.has_perm("inbox.answer_conversation")
    assert agent.has_perm("dlq.view_deadletter")
    assert not agent.has_perm("dlq.requeue_deadletter")
    assert not agent.has_perm("dlq.change_deadletter")
    assert not agent.has_perm("leads.change_business"), "a business's settings and secrets"
    operators = Group.objects.get(name="operators")
    assert operators.permissions.filter(codename="requeue_deadletter").exists()
    assert operators.permissions.filter(codename="answer_conversation").exists()


def test_a_viewer_without_the_answer_permission_sees_no_forms_and_may_not_post(client, django_user_model, groups, lead):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", "v@example.com", "pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_conversation"))
    client.force_login(viewer)
    page = client.get(thread_url(lead))
    assert page.status_code == 200
    assert b'id="ib-take-over"' not in page.content
    assert client.post(thread_url(lead, "inbox:act"), {"action": "take_over"}).status_code == 403
    assert not Lead.objects.get(pk=lead.pk).is_taken_over()


def test_the_list_is_newest_activity_first_and_filters(client, agent, other_agent, business, lead):
    now = timezone.now()
    other = Business.objects.create(business_id="other-shop", tenant_id="t2", display_name="Other shop")
    quiet = Lead.objects.create(
        lead_id="ld.quiet", business=business, wa_id="15550002222", last_inbound_at=now - timedelta(hours=30)
    )
    flagged = Lead.objects.create(
        lead_id="ld.flagged", business=other, wa_id="15550003333", needs_review=True, last_inbound_at=now
    )
    assert lead.take_over(other_agent, 24)
    client.force_login(agent)

    def listed(**query) -> list[str]:
        response = client.get(reverse("inbox:list-data"), query)
        assert response.status_code == 200
        return [c["lead_id"] for c in response.json()["conversations"]]

    assert listed() == ["ld.inbox1", "ld.flagged", "ld.quiet"], "the take over is the newest activity"
    assert listed(business="other-shop") == ["ld.flagged"]
    assert listed(needs_review="1") == ["ld.flagged"]
    assert listed(taken_over="1") == ["ld.inbox1"]
    assert set(listed(window_open="1")) == {"ld.inbox1", "ld.flagged"}
    assert listed(business="acme-bakery", window_open="1") == ["ld.inbox1"]

    row = client.get(reverse("inbox:list-data")).json()["conversations"][0]
    assert row["taken_over"] and row["taken_over_by"] == "bo"
    assert row["window_open"] and not row["needs_review"]
    assert row["url"] == thread_url(lead)
    assert quiet.pk and flagged.pk
    page = client.get(reverse("inbox:list"), {"needs_review": "1"})
    assert page.status_code == 200 and reverse("inbox:list-data").encode() + b"?needs_review=1" in page.content


def test_the_thread_json_holds_the_conversation_in_time_order_each_with_its_admin_link(client, agent, business, lead):
    now = timezone.now()
    message = ProcessedMessage.objects.create(
        processing_id="p-1",
        business_id=business.business_id,
        lead_id=lead.lead_id,
        intent="PRICING_QUESTION",
        status=ProcessedMessage.Status.PROCESSED,
        lead_record=lead,
        reply_text="A loaf is $6.50.",
        payload={
            "message": {"text": "How much is a loaf?", "received_at": (now - timedelta(minutes=5)).isoformat()},
            "confidence": 0.91,
        },
    )
    SagaStep.objects.create(message=message, saga_run=1, order=0, action="NOTIFY_SALES", status="SUCCEEDED")
    bot = OutboundMessage.objects.create(
        processing_id="p-1",
        saga_run=1,
        idempotency_key="p-1:1:reply",
        business=business,
        lead=lead,
        to=lead.wa_id,
        body="A loaf is $6.50.",
        status=OutboundMessage.Status.SENT,
        delivery_status="read",
    )
    DeadLetter.objects.create(
        processing_id="p-0", business_id=business.business_id, lead_id=lead.lead_id, stage="reply", reason="x"
    )
    assert lead.take_over(agent, 24)
    client.force_login(agent)

    data = client.get(thread_url(lead, "inbox:thread-data")).json()

    assert data["lead"]["lead_id"] == lead.lead_id
    assert data["lead"]["taken_over_by"] == "ana" and data["lead"]["window_open"]
    assert data["lead"]["opted_out"] is False
    lead.opt_out(source="keyword")
    assert client.get(thread_url(lead, "inbox:thread-data")).json()["lead"]["opted_out"] is True
    assert data["lead"]["admin_url"] == reverse("admin:leads_lead_change", args=[lead.pk])
    kinds = [item["kind"] for item in data["items"]]
    assert kinds == ["inbound", "bot_reply", "dead_letter", "activity"]
    inbound, reply, dead, taken = data["items"]
    assert inbound["text"] == "How much is a loaf?"
    assert inbound["intent"] == "PRICING_QUESTION" and inbound["confidence"] == 0.91
    assert inbound["actions"] == [{"action": "NOTIFY_SALES", "status": "SUCCEEDED"}]
    assert inbound["admin_url"] == reverse("admin:whatsapp_processedmessage_change", args=[message.pk])
    assert reply["ticks"] == "read" and reply["by"] == ""
    assert reply["admin_url"] == reverse("admin:whatsapp_outboundmessage_change", args=[bot.pk])
    assert dead["stage"] == "reply"
    assert taken["activity"] == "taken_over" and taken["by"] == "ana"
    for item in data["items"]:
        assert client.get(item["admin_url"]).status_code in (200, 403), item["admin_url"]
    assert client.get(thread_url(lead)).status_code == 200


def test_an_unknown_conversation_is_404(client, agent, business):
    client.force_login(agent)
    assert client.get(reverse("inbox:thread", args=[business.business_id, "ld.nobody"])).status_code == 404
    assert client.get(reverse("inbox:thread-data", args=["no-such-shop", "ld.nobody"])).status_code == 404


def test_the_forms_take_over_reply_and_hand_back_with_clear_refusals(client, agent, other_agent, lead):
    client.force_login(agent)
    assert act(client, lead, "reply", text="Hello") == [
        "Take the conversation over first: the bot answers it while nobody holds it."
    ]
    assert act(client, lead, "take_over")[0].startswith("You hold this conversation")
    assert act(client, lead, "reply", text="   ") == ["The reply is empty."]
    assert act(client, lead, "reply", text="Hello, Ana here: your loaves are ready.")[0].startswith("Reply queued")
    row = OutboundMessage.objects.get(lead=lead)
    assert row.sent_by == agent and row.status == OutboundMessage.Status.PENDING
    assert row.processing_id.startswith(AGENT_REPLY_PREFIX) and row.body == "Hello, Ana here: your loaves are ready."

    client.force_login(other_agent)
    assert act(client, lead, "take_over") == ["ana has taken this conversation over already."]
    assert act(client, lead, "hand_back") == ["ana holds this conversation: only they can hand it back."]
    assert act(client, lead, "reply", text="Me too") == [
        "Take the conversation over first: the bot answers it while nobody holds it."
    ]
    client.force_login(agent)
    assert act(client, lead, "hand_back")[0].startswith("Handed back")
    assert act(client, lead, "hand_back") == ["Nobody holds this conversation: the bot answers it already."]
    assert client.get(thread_url(lead, "inbox:act")).status_code == 405

    Lead.objects.filter(pk=lead.pk).update(last_inbound_at=timezone.now() - timedelta(hours=25))
    assert act(client, lead, "take_over")[0].startswith("You hold")
    assert act(client, lead, "reply", text="Late")[0].startswith("The customer's 24-hour window is closed")
    assert OutboundMessage.objects.filter(lead=lead).count() == 1
    kinds = [(a.kind, a.detail["by"]) for a in LeadActivity.objects.filter(lead=lead)]
    assert kinds == [
        ("taken_over", "ana"),
        ("agent_replied", "ana"),
        ("handed_back", "ana"),
        ("taken_over", "ana"),
    ]


def test_the_admin_index_lists_conversations_and_leads_to_the_inbox(client, agent, django_user_model):
    client.force_login(agent)
    index = client.get(reverse("admin:index"))
    assert index.status_code == 200
    assert reverse("admin:inbox_conversation_changelist").encode() in index.content
    response = client.get(reverse("admin:inbox_conversation_changelist"))
    assert response.status_code == 302 and response.url == reverse("inbox:list")
    client.force_login(django_user_model.objects.create_user("intern", "i@example.com", "pw", is_staff=True))
    assert reverse("admin:inbox_conversation_changelist").encode() not in client.get(reverse("admin:index")).content
