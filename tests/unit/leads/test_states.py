"""The lead state machine, on the real database: moves, no-ops, history and the row lock."""

from __future__ import annotations

import threading
from itertools import product

import pytest
from django.db import connection, transaction

from leads.models import Lead, LeadActivity
from leads.states import TRANSITIONS, InvalidTransition, advance, can_move

pytestmark = pytest.mark.django_db

S = Lead.State
ALLOWED = {
    (S.NEW, S.CONTACTED),
    (S.NEW, S.QUALIFIED),
    (S.NEW, S.CONVERTED),
    (S.NEW, S.LOST),
    (S.CONTACTED, S.QUALIFIED),
    (S.CONTACTED, S.CONVERTED),
    (S.CONTACTED, S.LOST),
    (S.QUALIFIED, S.CONVERTED),
    (S.QUALIFIED, S.LOST),
    (S.LOST, S.CONTACTED),
    (S.LOST, S.QUALIFIED),
    (S.LOST, S.CONVERTED),
}
ALL_PAIRS = list(product(S.values, S.values))


@pytest.fixture
def make_lead(business):
    counter = iter(range(1, 10_000))

    def make(state: str = S.NEW) -> Lead:
        return Lead.objects.create(lead_id=f"lead-{next(counter)}", business=business, wa_id="15550123456", state=state)

    return make


def history(lead: Lead) -> list[tuple[str, str, str, str, dict]]:
    return list(lead.activities.values_list("kind", "from_state", "to_state", "processing_id", "detail"))


def test_table_covers_every_state():
    assert set(TRANSITIONS) == set(S.values)
    assert TRANSITIONS[S.CONVERTED] == frozenset()


@pytest.mark.parametrize("from_state,to_state", ALL_PAIRS)
def test_can_move_matches_the_documented_table(from_state, to_state):
    assert can_move(from_state, to_state) is ((from_state, to_state) in ALLOWED)


@pytest.mark.parametrize("from_state,to_state", sorted(ALLOWED))
def test_allowed_move_updates_the_lead_and_writes_one_activity(make_lead, from_state, to_state):
    lead = make_lead(from_state)
    assert advance(lead.pk, to_state, processing_id="proc-1", reason="order") is True
    lead.refresh_from_db()
    assert lead.state == to_state
    assert history(lead) == [("state_changed", from_state, to_state, "proc-1", {"reason": "order"})]


@pytest.mark.parametrize("from_state,to_state", [pair for pair in ALL_PAIRS if pair not in ALLOWED])
def test_disallowed_move_is_a_silent_no_op(make_lead, from_state, to_state):
    lead = make_lead(from_state)
    assert advance(lead.pk, to_state, processing_id="proc-1", reason="pricing") is False
    lead.refresh_from_db()
    assert lead.state == from_state
    assert history(lead) == []


def test_a_later_question_does_not_demote_a_qualified_lead(make_lead):
    lead = make_lead()
    assert advance(lead.pk, S.QUALIFIED, processing_id="p-call", reason="schedule_call") is True
    assert advance(lead.pk, S.CONTACTED, processing_id="p-price", reason="pricing") is False
    assert advance(lead.pk, S.QUALIFIED, processing_id="p-call", reason="schedule_call") is False  # redelivery
    lead.refresh_from_db()
    assert lead.state == S.QUALIFIED
    assert [row[:4] for row in history(lead)] == [("state_changed", "NEW", "QUALIFIED", "p-call")]


def test_converted_is_terminal(make_lead):
    lead = make_lead()
    assert advance(lead.pk, S.CONVERTED, processing_id="p-order", reason="order") is True
    for target in S.values:
        assert advance(lead.pk, target, processing_id="p-late", reason="late") is False
    lead.refresh_from_db()
    assert lead.state == S.CONVERTED
    assert lead.activities.count() == 1


def test_lost_lead_writing_again_is_reopened_and_the_path_is_recorded(make_lead):
    lead = make_lead()
    steps = [(S.CONTACTED, "p1"), (S.LOST, "p2"), (S.QUALIFIED, "p3"), (S.CONVERTED, "p4")]
    for to_state, processing_id in steps:
        assert advance(lead.pk, to_state, processing_id=processing_id, reason="test") is True
    assert [(row[1], row[2], row[3]) for row in history(lead)] == [
        ("NEW", "CONTACTED", "p1"),
        ("CONTACTED", "LOST", "p2"),
        ("LOST", "QUALIFIED", "p3"),
        ("QUALIFIED", "CONVERTED", "p4"),
    ]


def test_the_move_bumps_updated_at(make_lead):
    lead = make_lead()
    before = lead.updated_at
    advance(lead.pk, S.CONTACTED, processing_id="p1", reason="pricing")
    lead.refresh_from_db()
    assert lead.updated_at > before


def test_unknown_state_name_is_a_caller_bug(make_lead):
    lead = make_lead()
    with pytest.raises(InvalidTransition):
        advance(lead.pk, "ARCHIVED", processing_id="p1", reason="typo")
    lead.refresh_from_db()
    assert lead.state == S.NEW and lead.activities.count() == 0


def test_missing_lead_raises(make_lead):
    with pytest.raises(Lead.DoesNotExist):
        advance(999_999_999, S.CONTACTED, processing_id="p1", reason="gone")
    assert not LeadActivity.objects.filter(processing_id="p1").exists()


def test_advance_joins_the_callers_transaction(make_lead):
    """A failure later in the caller's transaction must take the move and its activity with it."""
    lead = make_lead()
    with pytest.raises(RuntimeError), transaction.atomic():
        assert advance(lead.pk, S.CONTACTED, processing_id="p1", reason="pricing") is True
        raise RuntimeError("saga step failed")
    lead.refresh_from_db()
    assert lead.state == S.NEW
    assert not LeadActivity.objects.filter(lead=lead).exists()


def test_concurrent_moves_are_judged_one_after_the_other(make_lead):
    """While one transaction holds the lead, another advance waits and then sees its result."""
    lead = make_lead()
    holding = threading.Event()
    release = threading.Event()
    outcome: dict[str, object] = {}

    def converter() -> None:
        try:
            with transaction.atomic():
                Lead.objects.select_for_update().get(pk=lead.pk)
                holding.set()
                release.wait(10)
                outcome["converted"] = advance(lead.pk, S.CONVERTED, processing_id="p-order", reason="order")
        finally:
            connection.close()

    def questioner() -> None:
        try:
            outcome["contacted"] = advance(lead.pk, S.CONTACTED, processing_id="p-price", reason="pricing")
        finally:
            connection.close()

    first = threading.Thread(target=converter)
    first.start()
    assert holding.wait(10)
    second = threading.Thread(target=questioner)
    second.start()
    second.join(0.5)
    assert second.is_alive(), "advance did not wait for the row lock"
    release.set()
    first.join(10)
    second.join(10)
    assert outcome == {"converted": True, "contacted": False}
    lead.refresh_from_db()
    assert lead.state == S.CONVERTED
    assert [row[1:3] for row in history(lead)] == [("NEW", "CONVERTED")]
