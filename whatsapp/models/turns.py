"""Whose turn it is in a conversation: one customer's messages run one at a time.

A row exists while one of the conversation's messages (business + the producer's lead id)
holds the turn: it runs, and the conversation's other messages wait as inbox rows in
WAITING, never as sleeping tasks. The holder's finish or dead letter hands the turn to the
earliest of them (Meta's timestamp, then the Kafka offset), or deletes the row when none
waits (whatsapp.pipeline.turns).

`waiting` counts the messages queued behind the holder, kept under the row's lock by
whoever queues one: the holder's finish deletes the row in its own statement when it is 0
(InboxQuerySet.finish_run), so a customer writing one message at a time costs nothing more.
"""

from __future__ import annotations

from django.db import models


class ConversationTurn(models.Model):
    business_id = models.CharField(max_length=64)
    lead_id = models.CharField(max_length=64)
    # The holder: one run of one inbox row (a new run of the same message takes its own turn).
    processing_id = models.CharField(max_length=128)
    saga_run = models.PositiveIntegerField()
    waiting = models.PositiveIntegerField(default=0, help_text="Messages of this conversation queued behind it.")
    taken_at = models.DateTimeField()

    class Meta:
        verbose_name = "conversation turn"
        constraints = [models.UniqueConstraint(fields=["business_id", "lead_id"], name="turn_one_per_conversation")]

    def __str__(self) -> str:
        return f"{self.business_id}/{self.lead_id}: {self.processing_id} run {self.saga_run}"
