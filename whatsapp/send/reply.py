"""Replying to the customer on WhatsApp, at most once per (processing_id, saga run).

A database commit and an HTTP call cannot be atomic, and the Cloud API offers no
idempotency key nor any lookup of a sent message by biz_opaque_callback_data. So the
OutboundMessage row is the only memory of what may already be on the customer's phone,
and it is written *before* the call:

    PENDING/FAILED --(committed)--> SENDING --> SENT        (wamid stored)
                                           \\--> FAILED      (Meta said no: nothing was sent)
                                           \\--> UNKNOWN     (read timeout, dropped connection)

Decision on UNKNOWN: the reply is NOT re-sent automatically. A read timeout usually means
Meta accepted the message and we lost the answer; re-sending would give the customer the
same reply twice, and there is no API to check first. The first call raises a retryable
error (so the saga's retry logs the attempt), and every later call for that key raises
ReplyOutcomeUnknown, a PermanentActionError, so the message lands in the DLQ where an
operator can look at the conversation (or a later status webhook carrying our
biz_opaque_callback_data) and decide. A row found still SENDING long after any request
could have finished means a worker died mid-call: same uncertainty, same treatment.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from core.breakers import breaker_for
from core.clients import cloud_api
from core.metrics import counters
from leads.models import Business, Lead, ReviewFlag
from whatsapp.actions.base import atomic_if_nested
from whatsapp.models import MessageTemplate
from whatsapp.models.outbound import FINAL, SENDABLE, OutboundMessage, ReplyOutcomeUnknown
from whatsapp.send import pacer
from whatsapp.send import template as templates

log = logging.getLogger(__name__)

# Free-form messages are only allowed within 24 h of the customer's last message.
CUSTOMER_SERVICE_WINDOW = timedelta(hours=24)
# Added to the HTTP timeouts: how long a SENDING row may legitimately be in flight.
IN_FLIGHT_MARGIN_SECONDS = 30.0
WINDOW_CLOSED_REASON = "window_closed"
TEMPLATE_STATUS_FOR_CODE = {cloud_api.TEMPLATE_PAUSED: "PAUSED", cloud_api.TEMPLATE_DISABLED: "DISABLED"}

Status = OutboundMessage.Status


def reply_key(processing_id: str, saga_run: int) -> str:
    return f"{processing_id}:{saga_run}:reply"


def window_open(last_inbound_at: datetime | None, now: datetime) -> bool:
    """Unknown counts as closed: a free-form message outside the window is refused (131047)
    and, repeated, hurts the number's quality rating."""
    return last_inbound_at is not None and now - last_inbound_at < CUSTOMER_SERVICE_WINDOW


def send_reply(
    *,
    processing_id: str,
    saga_run: int,
    business: Business,
    lead: Lead,
    text: str,
    context_message_id: str | None = None,
    now: datetime | None = None,
    kind: str = "",
    fields: dict | None = None,
    confirms_opt_out: bool = False,
) -> OutboundMessage:
    """Send `text` to the lead once, and return its OutboundMessage row.

    Returns the row as it was when it is already SENT or SKIPPED_*; skips (no POST) when
    the business has replies off. With the 24-hour window closed, sends the business's
    approved template for the reply's `kind` instead, filled from `fields`
    (whatsapp.send.template), or, with none to send, skips and flags the lead for review.
    To a customer who opted out (Lead.opted_out_at) nothing goes but the confirmation of their
    STOP (`confirms_opt_out`): the row is SKIPPED_OPTED_OUT, the run goes on (its actions stand).
    Raises a CloudApiError (retryable or permanent) when the send fails, ReplyOutcomeUnknown
    for an UNKNOWN row (see the module docstring), ReplyInFlight while another worker holds
    the row in SENDING. While an agent holds the conversation (Lead.taken_over_by, the inbox
    app) the row is SKIPPED_AGENT: the bot's text kept in it, nothing sent, the actions stand.

    Call it outside any transaction: SENDING must be committed before the HTTP call, or a
    crash after the POST would roll the row back to PENDING and the retry would send again.
    """
    now = now or timezone.now()
    reply_fields = fields  # the template's values; `fields` below is the row's
    if connection.in_atomic_block:
        log.warning("send_reply for %s runs inside a transaction: its SENDING mark is not durable", processing_id)
    fields = {
        "idempotency_key": reply_key(processing_id, saga_run),
        "processing_id": processing_id,
        "saga_run": saga_run,
        "business": business,
        "lead": lead,
        "to": lead.address,
        "body": text,
        "context_message_id": context_message_id or "",
    }
    breaker = breaker_for(f"whatsapp:{business.phone_number_id}")
    paced = False
    opted_out = lead.opted_out_at is not None and not confirms_opt_out
    # An agent holds the conversation (the inbox app): the row keeps the bot's text, nothing goes.
    taken_over = lead.is_taken_over(now)
    if (
        business.replies_enabled
        and business.phone_number_id
        and not opted_out
        and not taken_over
        and window_open(lead.last_inbound_at, now)
    ):
        # The usual case, a first send: the row is created already claimed (SENDING, one
        # statement, committed) inside the breaker's call, so an open breaker still costs
        # no attempt. A row that exists already (a redelivery, a retry) takes the path below.
        # The pacer goes first: a send that must wait raises PaceWait with nothing claimed.
        _pace(business, lead, reply_key(processing_id, saga_run))
        paced = True
        try:
            return breaker.call(_create_and_send, fields, business, processing_id)
        except _RowExists:
            pass
    row, _ = OutboundMessage.objects.get_or_create(idempotency_key=fields.pop("idempotency_key"), defaults=fields)
    if row.status in FINAL:
        return row
    if row.status == Status.UNKNOWN:
        raise ReplyOutcomeUnknown("reply outcome unknown; not re-sent to avoid a duplicate")

    if row.status in SENDABLE:
        # (A SENDING row goes straight to the claim: whatever is decided now, it may be out.)
        if opted_out:
            return _skip_opted_out(row)
        if taken_over:
            if OutboundMessage.objects.skip(row.pk, Status.SKIPPED_AGENT):
                counters.action(counters.REPLY, "skipped")
                log.info("reply for %s skipped: an agent has taken the conversation over", processing_id)
            row.refresh_from_db()
            return row
        # Without a WhatsApp phone-number id there is nothing to send from.
        if not business.replies_enabled or not business.phone_number_id:
            if OutboundMessage.objects.skip(row.pk, Status.SKIPPED_DISABLED):
                counters.action(counters.REPLY, "skipped")
            row.refresh_from_db()
            return row
        if not window_open(lead.last_inbound_at, now):
            decision = templates.choose(
                business=business,
                lead=lead,
                processing_id=processing_id,
                saga_run=saga_run,
                kind=kind,
                fields=reply_fields,
            )
            if decision.choice is None:
                return _skip_window_closed(row, business, lead, now, why=decision.why_not)
            if not paced:
                _pace(business, lead, row.idempotency_key)
            return breaker.call(_claim_and_send, row.pk, business, processing_id, decision.choice)

    # Through the pacer (PaceWait) and the phone number's breaker: an open one raises
    # CircuitOpen before the row is claimed, so a refused send costs no attempt and stays sendable.
    if not paced:
        _pace(business, lead, row.idempotency_key)
    return breaker.call(_claim_and_send, row.pk, business, processing_id)


def _pace(business: Business, lead: Lead, key: str) -> None:
    """The one point every message POSTed to the customer passes first (whatsapp.send.pacer):
    a slot of the number and of the pair, or PaceWait. Its place among the number's waiters
    is the closing of the lead's 24-hour window."""
    pacer.reserve(
        business.phone_number_id,
        token=key,
        recipient=lead.address,
        priority=pacer.window_deadline(lead.last_inbound_at),
    )


class _RowExists(Exception):
    """The reply's row was there already: not a fault of the Cloud API (the breaker ignores it)."""

    health_signal = False


def _create_and_send(fields: dict, business: Business, processing_id: str) -> OutboundMessage:
    """Create the row SENDING with its first attempt and send it; _RowExists when the
    row exists already. Outside a transaction the INSERT commits by itself."""
    try:
        with atomic_if_nested():
            row = OutboundMessage.objects.create(**fields, status=Status.SENDING, attempts=1)
    except IntegrityError:
        raise _RowExists() from None
    return _send(row, business, processing_id)


def _claim_and_send(
    pk: int, business: Business, processing_id: str, choice: templates.TemplateChoice | None = None
) -> OutboundMessage:
    template = (choice.name, choice.language) if choice else None
    row = OutboundMessage.objects.claim_for_send(pk, in_flight=_in_flight_limit(), template=template)
    if row.status != Status.SENDING:
        return row
    return _send(row, business, processing_id, choice)


def _send(
    row: OutboundMessage, business: Business, processing_id: str, choice: templates.TemplateChoice | None = None
) -> OutboundMessage:
    """POST the claimed (SENDING, committed) row, as text or as the chosen template, and
    record what came of it."""
    try:
        if choice is None:
            result = cloud_api.send_text(
                phone_number_id=business.phone_number_id,
                to=row.to,
                body=row.body,
                context_message_id=row.context_message_id or None,
                biz_opaque_callback_data=processing_id,
            )
        else:
            result = cloud_api.send_template(
                phone_number_id=business.phone_number_id,
                to=row.to,
                name=choice.name,
                language=choice.language,
                components=choice.components,
                biz_opaque_callback_data=processing_id,
            )
    except cloud_api.CloudApiMarketingStopped as exc:
        # 131050: the customer stopped marketing messages. Their choice, not a fault: the lead
        # records it (no MARKETING template goes to them again) and the reply is skipped, with
        # Meta's code on the row; no retry, no dead letter.
        _record_failure(row, Status.SKIPPED_OPTED_OUT, exc)
        row.lead.stop_marketing(source="cloud_api_131050", processing_id=processing_id)
        counters.action(counters.REPLY, "skipped")
        log.info("reply for %s skipped: the customer stopped marketing messages (131050)", processing_id)
        row.refresh_from_db()
        return row
    except cloud_api.CloudApiTemplateError as exc:
        _record_failure(row, Status.FAILED, exc)
        if choice is not None and exc.code in TEMPLATE_STATUS_FOR_CODE:
            # Meta says it is paused or disabled: later replies skip it until its webhook says APPROVED.
            MessageTemplate.objects.refused(
                business.waba_id, choice.name, choice.language, TEMPLATE_STATUS_FOR_CODE[exc.code]
            )
        raise
    except cloud_api.CloudApiOutcomeUnknown as exc:
        _record_failure(row, Status.UNKNOWN, exc)
        log.error("reply for %s: outcome unknown (%s); it will not be re-sent automatically", processing_id, exc.title)
        raise
    except cloud_api.CloudApiError as exc:
        _record_failure(row, Status.FAILED, exc)
        # A throttling answer all the same (130429, 131056) slows the number or the pair down.
        pacer.throttled(business.phone_number_id, exc.code, recipient=row.to)
        raise
    except BaseException:
        # A bug or a kill between the POST and here: whether it went out is not known.
        OutboundMessage.objects.mark_unknown(row.pk, "unexpected error during send")
        raise

    if OutboundMessage.objects.mark_sent(row, wamid=result.wamid, http_status=result.http_status):
        counters.action(counters.REPLY, "succeeded")
    log.info("reply for %s sent as %s (attempt %d)", processing_id, result.wamid, row.attempts)
    return row


def _in_flight_limit() -> timedelta:
    # The total deadline bounds a send, whatever the connect and read timeouts are.
    return timedelta(seconds=cloud_api.deadline_seconds() + IN_FLIGHT_MARGIN_SECONDS)


def _record_failure(row: OutboundMessage, status: str, exc: cloud_api.CloudApiError) -> None:
    OutboundMessage.objects.record_failure(
        row.pk,
        status,
        code=exc.code,
        title=exc.title or str(exc),
        fbtrace_id=exc.fbtrace_id,
        http_status=exc.http_status,
    )


def _skip_opted_out(row: OutboundMessage) -> OutboundMessage:
    """The customer opted out: the reply is recorded as not sent, and why; no flag (nobody
    should follow up a customer who asked for silence) and no dead letter."""
    if OutboundMessage.objects.skip(row.pk, Status.SKIPPED_OPTED_OUT):
        counters.action(counters.REPLY, "skipped")
    log.info("reply for %s skipped: the customer opted out", row.processing_id)
    row.refresh_from_db()
    return row


def _skip_window_closed(
    row: OutboundMessage, business: Business, lead: Lead, now: datetime, *, why: str = ""
) -> OutboundMessage:
    """Skip the reply and ask a human to follow up (a call, a template sent by hand), in one
    transaction; `why` says why no template went (the flag's detail)."""
    key = f"{row.processing_id}:{row.saga_run}:reply-window"
    with transaction.atomic():
        # Lock the lead first, as FLAG_FOR_REVIEW does, so needs_review matches the open flags.
        Lead.objects.select_for_update().filter(pk=lead.pk).first()
        ReviewFlag.objects.get_or_create(
            idempotency_key=key,
            defaults={
                "processing_id": row.processing_id,
                "saga_run": row.saga_run,
                "business": business,
                "lead": lead,
                "reason": WINDOW_CLOSED_REASON,
                "detail": {
                    "outbound_message_id": row.pk,
                    "last_inbound_at": lead.last_inbound_at.isoformat() if lead.last_inbound_at else None,
                    "checked_at": now.isoformat(),
                    "template": why,
                },
            },
        )
        Lead.objects.filter(pk=lead.pk).update(needs_review=True, updated_at=timezone.now())
        if OutboundMessage.objects.skip(row.pk, Status.SKIPPED_WINDOW_CLOSED):
            counters.action(counters.REPLY, "skipped")
    lead.needs_review = True
    log.info("reply for %s skipped: the 24-hour window is closed; lead flagged for review", row.processing_id)
    row.refresh_from_db()
    return row
