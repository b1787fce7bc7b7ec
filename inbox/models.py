"""The inbox's one model: a conversation is a lead seen by an agent (a proxy, no table).

It exists for its permissions, which the views check and the agents group holds
(migrations/0002): viewing conversations is Django's view_conversation; taking one over,
handing it back and replying are one right, `answer_conversation`, because each of them
puts a person in the bot's place."""

from __future__ import annotations

from leads.models import Lead

ANSWER_PERMISSION = "inbox.answer_conversation"
VIEW_PERMISSION = "inbox.view_conversation"


class Conversation(Lead):
    class Meta:
        proxy = True
        default_permissions = ("view",)
        permissions = [("answer_conversation", "Can take a conversation over, hand it back and reply by hand")]
