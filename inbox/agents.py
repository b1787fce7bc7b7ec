"""What an agent does to a conversation: take it over, hand it back, reply by hand.

The views call these and nothing else writes: each says, by its exception's message, why it
could not be done, so the page can tell the agent in words (a Django message), and each
leaves a line with who in the lead's append-only activity (leads.models.LeadActivity).

Replying needs the conversation held by the agent who writes (else the bot and a person
could answer one message both) and the 24-hour window open (free text only: outside it Meta
refuses anything but a template, 131047). The row is written PENDING with the activity, in
one transaction, and its task (inbox.tasks.send_agent_reply) is queued once that commits: a
crash in between leaves a PENDING row on the page, never a message sent and not recorded.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from inbox import tasks
from leads.models import Lead, LeadActivity
from whatsapp.models import OutboundMessage
from whatsapp.send.reply import window_open

# WhatsApp's limit for a text message's body.
MAX_REPLY_CHARS = 4096


class NotAllowed(Exception):
    """The agent's action cannot be done as things stand; the message says why, to the agent."""


def take_over(lead: Lead, user: Any) -> None:
    if not lead.take_over(user, settings.INBOX_TAKEOVER_HOURS):
        holder = lead.taken_over_by.get_username() if lead.taken_over_by else "another agent"
        raise NotAllowed(f"{holder} has taken this conversation over already.")


def hand_back(lead: Lead, user: Any) -> None:
    if not lead.hand_back(user):
        if lead.is_taken_over():
            holder = lead.taken_over_by.get_username() if lead.taken_over_by else "another agent"
            raise NotAllowed(f"{holder} holds this conversation: only they can hand it back.")
        raise NotAllowed("Nobody holds this conversation: the bot answers it already.")


def reply(lead: Lead, user: Any, text: str) -> OutboundMessage:
    """Queue the agent's free-text reply; NotAllowed when it may not go."""
    body = text.strip()
    if not body:
        raise NotAllowed("The reply is empty.")
    if len(body) > MAX_REPLY_CHARS:
        raise NotAllowed(f"The reply is {len(body)} characters long; WhatsApp takes at most {MAX_REPLY_CHARS}.")
    now = timezone.now()
    with transaction.atomic():
        locked = Lead.objects.select_for_update().select_related("business").get(pk=lead.pk)
        if not (locked.is_taken_over(now) and locked.taken_over_by_id == user.pk):
            raise NotAllowed("Take the conversation over first: the bot answers it while nobody holds it.")
        if not window_open(locked.last_inbound_at, now):
            raise NotAllowed(
                "The customer's 24-hour window is closed: WhatsApp takes only a template until they write again."
            )
        row = OutboundMessage.objects.agent_reply(business=locked.business, lead=locked, text=body, by=user)
        LeadActivity.objects.create(
            lead=locked, kind="agent_replied", detail={"by": user.get_username(), "outbound_message_id": row.pk}
        )
        Lead.objects.filter(pk=locked.pk).update(updated_at=now)
        transaction.on_commit(lambda: _queue(row.pk))
    return row


def _queue(outbound_id: int) -> None:
    # The "whatsapp" queue: Cloud API sends, as the bot's replies.
    tasks.send_agent_reply.apply_async(args=(outbound_id,), task_id=f"agent-reply:{outbound_id}", queue="whatsapp")
