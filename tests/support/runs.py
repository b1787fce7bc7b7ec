"""Inbox rows brought to a given point of their run, in this process, for tests of what follows."""

from __future__ import annotations

from tests.support.events import encode, event
from whatsapp import saga
from whatsapp.ingest.intake import take_in
from whatsapp.kafka import Record


def acted(pid: str, offset: int) -> None:
    """An order message with its actions done: what the tail task finds."""
    take_in([Record("t", 0, offset, encode(event(pid, message_id=f"wamid.in-{pid}")))])
    assert saga.claim(pid, 1)
    for step in saga.plan_run(pid, 1):
        assert saga.run_step(pid, 1, step.order).done
