"""The lead state machine.

Allowed moves (anything else, including staying put, is a no-op):

    NEW        -> CONTACTED, QUALIFIED, CONVERTED, LOST
    CONTACTED  -> QUALIFIED, CONVERTED, LOST
    QUALIFIED  -> CONVERTED, LOST
    LOST       -> CONTACTED, QUALIFIED, CONVERTED  (a lost lead writing again is reopened)
    CONVERTED  -> (terminal)

Moves are forward-only because messages arrive in any order and each carries only its own
intent: a pricing question after a callback request must not demote a qualified lead, and a
redelivered message must not move a lead twice. So an unreachable target is not an error,
just nothing to do. A state name that does not exist at all is a bug in the caller, and that
raises InvalidTransition.
"""

from __future__ import annotations

from django.db import transaction

from core.metrics import counters
from leads.models import Lead, LeadActivity

# Plain strings, not the enum members: lead.state comes back from the database as str.
NEW = Lead.State.NEW.value
CONTACTED = Lead.State.CONTACTED.value
QUALIFIED = Lead.State.QUALIFIED.value
CONVERTED = Lead.State.CONVERTED.value
LOST = Lead.State.LOST.value

TRANSITIONS: dict[str, frozenset[str]] = {
    NEW: frozenset({CONTACTED, QUALIFIED, CONVERTED, LOST}),
    CONTACTED: frozenset({QUALIFIED, CONVERTED, LOST}),
    QUALIFIED: frozenset({CONVERTED, LOST}),
    LOST: frozenset({CONTACTED, QUALIFIED, CONVERTED}),
    CONVERTED: frozenset(),
}


class InvalidTransition(Exception):
    """A state name that is not a Lead.State; raised instead of storing garbage."""


def can_move(from_state: str, to_state: str) -> bool:
    return str(to_state) in TRANSITIONS.get(str(from_state), frozenset())


def move(lead: Lead, to_state: str, *, processing_id: str, reason: str) -> LeadActivity | None:
    """Move a lead whose row the caller holds locked in its transaction, if the machine
    allows it; returns the "state_changed" activity for the caller to store in the same
    transaction (with its other activities, in one insert), or None when it did not move."""
    to_state = _checked(to_state)
    from_state = lead.state
    if not can_move(from_state, to_state):
        return None
    lead.state = to_state
    lead.save(update_fields=["state", "updated_at"])
    counters.lead_state_changed(from_state, to_state)
    return LeadActivity(
        lead=lead,
        kind="state_changed",
        from_state=from_state,
        to_state=to_state,
        processing_id=processing_id,
        detail={"reason": reason},
    )


def advance(lead_pk: int, to_state: str, *, processing_id: str, reason: str) -> bool:
    """Move the lead if the machine allows it and record the move; True if it moved.

    The row is locked so that two messages for the same lead handled at once are judged one
    after the other, each against the state the other left, and the activity row is written
    in the same transaction so the history can never disagree with the state.
    """
    to_state = _checked(to_state)
    with transaction.atomic():
        lead = Lead.objects.select_for_update().get(pk=lead_pk)
        activity = move(lead, to_state, processing_id=processing_id, reason=reason)
        if activity is None:
            return False
        activity.save()
    return True


def _checked(to_state: str) -> str:
    to_state = str(to_state)  # a Lead.State member's str() is its value
    if to_state not in TRANSITIONS:
        raise InvalidTransition(f"{to_state!r} is not a lead state")
    return to_state
