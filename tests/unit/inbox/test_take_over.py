"""Taking a conversation over and handing it back (leads.Lead.take_over / hand_back), on real
Postgres: two agents at once end with exactly one holder, each change is in the lead's
activity with who, and while it is held the bot's reply is SKIPPED_AGENT with nothing sent
(whatsapp.send.reply, against a local server playing the Graph API)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from leads.models import Lead, LeadActivity
from whatsapp.models import OutboundMessage
from whatsapp.send.reply import send_reply

pytestmark = pytest.mark.django_db(transaction=True)

PHONE_NUMBER_ID = "106540352242922"


@pytest.fixture
def agents(transactional_db):
    return [User.objects.create_user(f"agent{n}", is_staff=True) for n in (1, 2)]


@pytest.fixture
def make_lead(business):
    made = iter(range(1000))

    def make() -> Lead:
        n = next(made)
        return Lead.objects.create(
            lead_id=f"lead-{n}", business=business, wa_id=f"1555000{n:04d}", last_inbound_at=timezone.now()
        )

    return make


def take_over_at_once(lead: Lead, users: list[User]) -> dict[str, bool]:
    """Each user's take_over in its own thread (its own connection), released together."""
    start = threading.Barrier(len(users))
    results: dict[str, bool] = {}

    def attempt(user: User) -> None:
        try:
            mine = Lead.objects.get(pk=lead.pk)
            start.wait(10)
            results[user.username] = mine.take_over(user, 24)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    return results


def test_two_agents_taking_over_at_once_leave_exactly_one_holder(make_lead, agents):
    for _ in range(15):
        lead = make_lead()
        results = take_over_at_once(lead, agents)
        assert sorted(results.values()) == [False, True], results
        winner = next(name for name, held in results.items() if held)
        lead.refresh_from_db()
        assert lead.taken_over_by.username == winner
        assert lead.is_taken_over()
        taken = LeadActivity.objects.filter(lead=lead, kind="taken_over")
        assert [a.detail["by"] for a in taken] == [winner]


def test_a_take_over_waits_for_one_in_progress_and_then_loses(make_lead, agents):
    """The first agent's UPDATE holds the row until its transaction commits; the second's
    waits for it and re-checks the condition on the row as the first left it."""
    lead = make_lead()
    first, second = agents
    holding, release = threading.Event(), threading.Event()
    outcome: dict[str, bool] = {}

    def slow_first() -> None:
        try:
            with transaction.atomic():
                outcome["first"] = Lead.objects.get(pk=lead.pk).take_over(first, 24)
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    def quick_second() -> None:
        try:
            outcome["second"] = Lead.objects.get(pk=lead.pk).take_over(second, 24)
        finally:
            connection.close()

    one = threading.Thread(target=slow_first)
    one.start()
    assert holding.wait(10)
    two = threading.Thread(target=quick_second)
    two.start()
    two.join(0.5)
    assert two.is_alive(), "the second take over did not wait for the first's row lock"
    release.set()
    one.join(10)
    two.join(10)
    assert outcome == {"first": True, "second": False}
    lead.refresh_from_db()
    assert lead.taken_over_by == first


def test_the_holder_renews_another_waits_until_it_passes_and_only_the_holder_hands_back(make_lead, agents):
    lead = make_lead()
    first, second = agents
    assert lead.take_over(first, 1)
    assert lead.take_over(first, 2), "the holder renews their hold"
    assert lead.taken_over_until > timezone.now() + timedelta(hours=1.9)
    assert not lead.take_over(second, 24)
    assert lead.taken_over_by == first, "the loser's object says who holds it"
    assert not lead.hand_back(second)
    assert lead.is_taken_over()

    # The hold passes by itself: another agent may take it, nobody had to release it.
    Lead.objects.filter(pk=lead.pk).update(taken_over_until=timezone.now() - timedelta(seconds=1))
    lead.refresh_from_db()
    assert not lead.is_taken_over()
    assert lead.take_over(second, 24)
    assert not lead.hand_back(first)
    assert lead.hand_back(second)
    assert lead.taken_over_by is None and not lead.is_taken_over()
    assert not lead.hand_back(second), "nothing to hand back twice"

    kinds = [(a.kind, a.detail["by"]) for a in LeadActivity.objects.filter(lead=lead)]
    assert kinds == [
        ("taken_over", "agent1"),
        ("taken_over", "agent1"),
        ("taken_over", "agent2"),
        ("handed_back", "agent2"),
    ]


def test_while_taken_over_the_bots_reply_is_kept_as_skipped_agent_and_nothing_is_sent(
    make_lead, agents, settings, httpserver, business
):
    settings.WHATSAPP_GRAPH_BASE_URL = httpserver.url_for("").rstrip("/")
    settings.WHATSAPP_ACCESS_TOKEN = "EAAG-token"
    business.phone_number_id = PHONE_NUMBER_ID
    business.save(update_fields=["phone_number_id"])
    lead = make_lead()
    assert lead.take_over(agents[0], 24)

    row = send_reply(processing_id="p-held", saga_run=1, business=business, lead=lead, text="A loaf is $6.50.")

    assert row.status == OutboundMessage.Status.SKIPPED_AGENT
    assert row.body == "A loaf is $6.50.", "the page shows what the bot would have said"
    assert row.sent_by is None
    assert httpserver.log == [], "the Graph API got no request"
    again = send_reply(processing_id="p-held", saga_run=1, business=business, lead=lead, text="A loaf is $6.50.")
    assert again.pk == row.pk and again.status == OutboundMessage.Status.SKIPPED_AGENT


def test_once_the_hold_has_passed_the_bot_replies_again(make_lead, agents, settings, httpserver, business):
    settings.WHATSAPP_GRAPH_BASE_URL = httpserver.url_for("").rstrip("/")
    settings.WHATSAPP_GRAPH_VERSION = "v21.0"
    settings.WHATSAPP_ACCESS_TOKEN = "EAAG-token"
    business.phone_number_id = PHONE_NUMBER_ID
    business.save(update_fields=["phone_number_id"])
    httpserver.expect_request(f"/v21.0/{PHONE_NUMBER_ID}/messages", method="POST").respond_with_json(
        {"messaging_product": "whatsapp", "messages": [{"id": "wamid.after-hold"}]}
    )
    lead = make_lead()
    assert lead.take_over(agents[0], 1)
    Lead.objects.filter(pk=lead.pk).update(taken_over_until=timezone.now() - timedelta(seconds=1))
    lead.refresh_from_db()

    row = send_reply(processing_id="p-after", saga_run=1, business=business, lead=lead, text="A loaf is $6.50.")

    assert row.status == OutboundMessage.Status.SENT and row.wamid == "wamid.after-hold"
    (request, _) = httpserver.log[0]
    assert request.get_json()["text"]["body"] == "A loaf is $6.50."
