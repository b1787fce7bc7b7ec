"""An agent's reply, typed on the inbox's conversation page, sent the way the bot's are.

The inbox app writes the row (OutboundMessage.objects.agent_reply: PENDING, `sent_by` the
agent) and queues its task (inbox.tasks.send_agent_reply), which calls `send` here. From
there it is the bot's path (whatsapp.send.reply): the pacer first, then the number's breaker,
the claim that commits SENDING before the POST, the same SENT/FAILED/UNKNOWN machine, so a
read timeout is never re-sent, Meta's status webhooks tick it (whatsapp.saga.statuses), and a
reply that fails for good is dead-lettered at stage reply (`dead_letter`).

Free text only: the window is checked again when the task runs (the page checked it when
the agent wrote), and a reply found outside it is SKIPPED_WINDOW_CLOSED, not sent (Meta
would refuse it, 131047, and a refusal hurts the number's quality rating).

No pipeline run stands behind an agent's reply, so its dead letter is the record of what
failed, not a way to resend: a DLQ requeue refuses it (no inbox row), and the agent writes
again from the page. Covered by tests/integration/inbox/test_take_over.py.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from core.breakers import breaker_for
from core.errors import PermanentActionError
from dlq.models import DeadLetter
from whatsapp.models.outbound import FINAL, SENDABLE, OutboundMessage, ReplyOutcomeUnknown
from whatsapp.send import reply

Status = OutboundMessage.Status


class AgentReplyRefused(PermanentActionError):
    """The reply cannot be sent as things stand (no number to send from); no retry can help."""


def send(pk: int, *, now: datetime | None = None) -> OutboundMessage:
    """Send the agent's reply `pk` once and return its row: as it was when it is done already
    (SENT, SKIPPED_*), SKIPPED_WINDOW_CLOSED outside the 24-hour window. Raises what the bot's
    send raises: CircuitOpen or PaceWait (nothing claimed: try later), a CloudApiError,
    ReplyOutcomeUnknown, ReplyInFlight; AgentReplyRefused when the business has no number."""
    now = now or timezone.now()
    row = OutboundMessage.objects.select_related("business", "lead").get(pk=pk)
    if row.status in FINAL:
        return row
    if row.status == Status.UNKNOWN:
        raise ReplyOutcomeUnknown("reply outcome unknown; not re-sent to avoid a duplicate")
    business, lead = row.business, row.lead
    if row.status in SENDABLE:
        if not business.phone_number_id:
            raise AgentReplyRefused(f"business {business.business_id} has no WhatsApp phone-number id to send from")
        if not reply.window_open(lead.last_inbound_at, now):
            OutboundMessage.objects.skip(row.pk, Status.SKIPPED_WINDOW_CLOSED)
            row.refresh_from_db()
            return row
    # The bot's own steps (whatsapp.send.reply), in its order: pacer, breaker, claim, POST.
    reply._pace(business, lead, row.idempotency_key)
    sent: OutboundMessage = breaker_for(f"whatsapp:{business.phone_number_id}").call(
        reply._claim_and_send, row.pk, business, row.processing_id
    )
    return sent


def dead_letter(pk: int, *, reason: str, error: str, traceback: str = "") -> DeadLetter | None:
    """The failed agent reply `pk` as a dead letter at stage reply, once (None when it has an
    open one already): the operator sees it beside the bot's, with who wrote it."""
    with transaction.atomic():
        # Only the reply is locked: FOR UPDATE cannot take the nullable side (sent_by) of the join.
        related = OutboundMessage.objects.select_related("business", "lead", "sent_by")
        row = related.select_for_update(of=("self",)).get(pk=pk)
        if DeadLetter.objects.open_for_run(row.processing_id, row.saga_run) is not None:
            return None
        return DeadLetter.for_run(
            processing_id=row.processing_id,
            saga_run=row.saga_run,
            stage=DeadLetter.Stage.REPLY,
            reason=reason,
            error=error,
            traceback=traceback,
            business_id=row.business.business_id,
            lead_id=row.lead.lead_id,
            attempts=row.attempts,
            saga_state={
                "agent_reply": row.pk,
                "by": row.sent_by.get_username() if row.sent_by else "",
                "status": row.status,
            },
        )
