"""Erasing a customer: their personal data (numbers, BSUIDs, username, name, message texts,
media captions) removed from every table that keeps it, in one transaction per customer.

Rows that are the business's facts stay (an order with its lines and amounts, a ticket, the
saga's steps, the activity log's entries), without the personal data. The activity log is
append-only; its trigger (leads/migrations/0012) lets one kind of UPDATE through: `detail`
only, for the lead of the Erasure row named by the transaction-local `leads.erasure`.

A customer with a message in flight (inbox RECEIVED/PROCESSING, outbox PENDING, a reply
PENDING/SENDING) is refused, naming the messages: erase once they have finished.
See docs/operating/erasure.md.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Q

from dlq.models import DeadLetter
from leads.models import (
    Business,
    Erasure,
    Lead,
    LeadActivity,
    LeadAlias,
    ReviewFlag,
    SalesNotification,
    SupportTicket,
    is_bsuid,
)
from whatsapp.models import (
    DeliveryStatus,
    InboundMessage,
    OutboundMessage,
    ProcessedMessage,
    SagaStep,
    WebhookChange,
    WebhookDelivery,
)

ERASED = "[erased]"
# Keys whose string values are the customer's own in a message-shaped document.
PERSONAL_KEYS = frozenset(
    {
        "wa_id",
        "user_id",
        "parent_user_id",
        "username",
        "name",
        "text",
        "body",
        "caption",
        "from",
        "from_user_id",
        "recipient_id",
        "recipient_user_id",
        "to",
        "recipient",
        "input",
        "filename",
        "title",
    }
)
# Strings shorter than this are not searched for inside other text (too many false hits).
_MIN_SEARCH = 3


class CustomerInFlight(Exception):
    """The customer has messages the pipeline is still working on."""


class CustomerNotFound(Exception):
    pass


class Scrubber:
    """Replaces the customer's values wherever they appear in a text or a JSON value."""

    def __init__(self, values: set[str]) -> None:
        found = sorted({v for v in values if len(v) >= _MIN_SEARCH}, key=len, reverse=True)
        self.pattern = re.compile("|".join(re.escape(v) for v in found), re.IGNORECASE) if found else None

    def text(self, value: str) -> str:
        return self.pattern.sub(ERASED, value) if self.pattern and value else value

    def json(self, value: Any, *, keys: frozenset[str] = frozenset()) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.json(item, keys=keys) for item in value]
        if isinstance(value, dict):
            return {
                self.text(k): (ERASED if k in keys and isinstance(v, str) and v else self.json(v, keys=keys))
                for k, v in value.items()
            }
        return value

    def raw(self, data: bytes | memoryview | None, *, keys: frozenset[str] = frozenset()) -> bytes | None:
        if data is None:
            return None
        raw = bytes(data)
        try:
            return json.dumps(self.json(json.loads(raw), keys=keys), ensure_ascii=False).encode()
        except (ValueError, UnicodeDecodeError, RecursionError):
            if self.pattern is None:
                return raw
            return re.sub(self.pattern.pattern.encode(), ERASED.encode(), raw, flags=re.IGNORECASE)

    def matches(self, value: Any) -> bool:
        if self.pattern is None or value is None:
            return False
        text = (
            value
            if isinstance(value, str)
            else bytes(value).decode("utf-8", "replace")
            if isinstance(value, (bytes, memoryview))
            else json.dumps(value, ensure_ascii=False)
        )
        return self.pattern.search(text) is not None


# An inbound message's columns that hold who the customer is or what they wrote: blanked.
INBOUND_PERSONAL = (
    "wa_id",
    "user_id",
    "parent_user_id",
    "username",
    "profile_name",
    "text",
    "media_id",
    "media_caption",
    "media_filename",
)


def find_leads(business: Business, customer: str) -> list[Lead]:
    """Every lead of the business known by the identifier, and by the identifiers those leads
    have (a number on two leads, a BSUID joined later)."""
    numbers: set[str] = set()
    bsuids: set[str] = set()
    (bsuids if is_bsuid(customer) else numbers).add(customer.lstrip("+"))
    leads: dict[int, Lead] = {}
    while True:
        found = Lead.objects.filter(business=business).filter(
            Q(wa_id__in=numbers - {""}) | Q(user_id__in=bsuids - {""}) | Q(lead_id=customer)
        )
        new = [lead for lead in found if lead.pk not in leads]
        if not new:
            return list(leads.values())
        for lead in new:
            leads[lead.pk] = lead
            numbers.add(lead.wa_id)
            bsuids.add(lead.user_id)


def in_flight(business: Business, leads: list[Lead], lead_ids: set[str]) -> list[str]:
    inbox = ProcessedMessage.objects.filter(
        Q(lead_record__in=leads) | Q(business_id=business.business_id, lead_id__in=lead_ids),
        status__in=ProcessedMessage.IN_FLIGHT,
    ).values_list("processing_id", flat=True)
    outbox = InboundMessage.objects.filter(lead_id__in=lead_ids, state=InboundMessage.State.PENDING).values_list(
        "processing_id", flat=True
    )
    replies = OutboundMessage.objects.filter(
        lead__in=leads, status__in=[OutboundMessage.Status.PENDING, OutboundMessage.Status.SENDING]
    ).values_list("processing_id", flat=True)
    return sorted({*inbox, *(p for p in outbox if p), *replies})


def erase_customer(business: Business, customer: str, *, by: str) -> dict[str, int]:
    """Erase the customer; what changed, rows per table. Raises CustomerNotFound or CustomerInFlight."""
    with transaction.atomic():
        leads = find_leads(business, customer)
        if not leads:
            raise CustomerNotFound(f"business {business.business_id} has no customer {customer}")
        Lead.objects.select_for_update().filter(pk__in=[lead.pk for lead in leads]).order_by("pk").first()
        return _erase(business, customer, leads, by)


def _erase(business: Business, customer: str, leads: list[Lead], by: str) -> dict[str, int]:
    changed: Counter[str] = Counter()
    aliases = list(LeadAlias.objects.filter(lead__in=leads))
    lead_ids = {lead.lead_id for lead in leads} | {a.alias for a in aliases}
    busy = in_flight(business, leads, lead_ids)
    if busy:
        raise CustomerInFlight(
            f"customer has {len(busy)} message(s) in flight: {', '.join(busy[:20])}; erase once they have finished"
        )
    own_lead = {a.alias: a.lead.lead_id for a in aliases} | {lead.lead_id: lead.lead_id for lead in leads}
    numbers = (
        {lead.wa_id for lead in leads} | {customer.lstrip("+")}
        if not is_bsuid(customer)
        else {lead.wa_id for lead in leads}
    )
    bsuids = {lead.user_id for lead in leads} | {lead.parent_user_id for lead in leads}
    if is_bsuid(customer):
        bsuids.add(customer)
    identifiers = {v for v in numbers | bsuids | {lead.username for lead in leads} if v}
    inbound = list(
        InboundMessage.objects.filter(
            Q(lead_id__in=lead_ids) | Q(lead_id="", wa_id__in=numbers - {""}) | Q(lead_id="", user_id__in=bsuids - {""})
        )
    )
    inbox = list(
        ProcessedMessage.objects.filter(
            Q(lead_record__in=leads) | Q(business_id=business.business_id, lead_id__in=lead_ids)
        )
    )
    outbound = list(OutboundMessage.objects.filter(lead__in=leads))
    personal = set(identifiers) | {lead.customer_name for lead in leads}
    for row in inbound:
        personal |= {
            row.wa_id,
            row.user_id,
            row.parent_user_id,
            row.username,
            row.profile_name,
            row.text,
            row.media_caption,
            row.media_filename,
        }
    for message in inbox:
        payload = message.payload if isinstance(message.payload, dict) else {}
        customer_part: dict[str, Any] = payload.get("customer") or {}
        if isinstance(customer_part, dict):
            personal |= {v for v in customer_part.values() if isinstance(v, str)}
        text = (payload.get("message") or {}).get("text") if isinstance(payload.get("message"), dict) else None
        if isinstance(text, str):
            personal.add(text)
    personal |= {row.body for row in outbound}
    # An old id made of the number (wa.<number>) is personal too.
    personal |= {alias for alias in lead_ids if any(i in alias for i in identifiers)}
    personal.discard("")
    scrub = Scrubber(personal)

    erasure = Erasure.objects.create(business=business, lead=leads[0], erased_by=by)
    extra = [Erasure(business=business, lead=lead, erased_by=by) for lead in leads[1:]]
    Erasure.objects.bulk_create(extra)
    wamids = [row.wamid for row in inbound if row.wamid]
    deliveries = {row.delivery_id for row in inbound if row.delivery_id}

    for row in inbound:
        for name in INBOUND_PERSONAL:
            setattr(row, name, "")
        row.last_error = scrub.text(row.last_error)
        row.lead_id = own_lead.get(row.lead_id, row.lead_id)
    InboundMessage.objects.bulk_update(
        inbound,
        [*INBOUND_PERSONAL, "last_error", "lead_id"],
    )
    changed["whatsapp_inboundmessage"] += len(inbound)

    for message in inbox:
        message.payload = scrub.json(message.payload, keys=PERSONAL_KEYS - {"name"})
        if isinstance(message.payload, dict) and isinstance(message.payload.get("customer"), dict):
            message.payload["customer"] = {k: ERASED if v else v for k, v in message.payload["customer"].items()}
        message.reply_text = ERASED if message.reply_text else ""
        message.last_error = scrub.text(message.last_error)
        message.last_traceback = scrub.text(message.last_traceback)
        message.lead_id = own_lead.get(message.lead_id, message.lead_id)
    ProcessedMessage.objects.bulk_update(inbox, ["payload", "reply_text", "last_error", "last_traceback", "lead_id"])
    changed["whatsapp_processedmessage"] += len(inbox)

    steps = list(SagaStep.objects.filter(message__in=inbox))
    for step in steps:
        step.params, step.result = scrub.json(step.params), scrub.json(step.result)
        step.attempt_log = scrub.json(step.attempt_log)
        step.error, step.traceback = scrub.text(step.error), scrub.text(step.traceback)
        step.compensation_error = scrub.text(step.compensation_error)
    SagaStep.objects.bulk_update(steps, ["params", "result", "attempt_log", "error", "traceback", "compensation_error"])
    changed["whatsapp_sagastep"] += len(steps)

    sent = [row.wamid for row in outbound if row.wamid]
    for reply in outbound:
        reply.to, reply.body, reply.error_title = "", ERASED, scrub.text(reply.error_title)
    OutboundMessage.objects.bulk_update(outbound, ["to", "body", "error_title"])
    changed["whatsapp_outboundmessage"] += len(outbound)

    statuses = list(
        DeliveryStatus.objects.filter(
            Q(wamid__in=sent)
            | Q(outcome=DeliveryStatus.Outcome.UNKNOWN, recipient_id__in=numbers - {""})
            | Q(outcome=DeliveryStatus.Outcome.UNKNOWN, recipient_user_id__in=bsuids - {""})
        )
    )
    for status in statuses:
        status.recipient_id = status.recipient_user_id = ""
        status.raw = scrub.json(status.raw, keys=PERSONAL_KEYS)
        status.errors = scrub.json(status.errors)
        status.error_title = scrub.text(status.error_title)
        # The delivery that brought it: stored in the same transaction, a moment before.
        window = WebhookDelivery.objects.filter(
            received_at__lte=status.received_at, received_at__gte=status.received_at - _WINDOW, statuses__gt=0
        ).values_list("pk", "body")
        deliveries |= {pk for pk, body in window if status.wamid.encode() in bytes(body)}
    DeliveryStatus.objects.bulk_update(statuses, ["recipient_id", "recipient_user_id", "raw", "errors", "error_title"])
    changed["whatsapp_deliverystatus"] += len(statuses)

    changes = list(WebhookChange.objects.filter(delivery_id__in=deliveries))
    changes += [
        c
        for c in WebhookChange.objects.filter(field__in=CUSTOMER_FIELDS).exclude(delivery_id__in=deliveries)
        if scrub.matches(c.value)
    ]
    for change in changes:
        change.value = _scrub_value(change.value, scrub, identifiers, wamids)
        change.reason = scrub.text(change.reason)
        deliveries.add(change.delivery_id)
    WebhookChange.objects.bulk_update(changes, ["value", "reason"])
    changed["whatsapp_webhookchange"] += len(changes)

    raw = list(WebhookDelivery.objects.filter(pk__in=deliveries))
    for delivery in raw:
        try:
            document = json.loads(bytes(delivery.body))
        except ValueError:
            delivery.body = scrub.raw(delivery.body)
        else:
            delivery.body = json.dumps(_scrub_value(document, scrub, identifiers, wamids), ensure_ascii=False).encode()
    WebhookDelivery.objects.bulk_update(raw, ["body"])
    changed["whatsapp_webhookdelivery"] += len(raw)

    pids = [m.processing_id for m in inbox] + [r.processing_id for r in inbound if r.processing_id]
    letters = list(DeadLetter.objects.filter(Q(lead_id__in=lead_ids) | Q(processing_id__in=pids))) + [
        d
        for d in DeadLetter.objects.filter(stage=DeadLetter.Stage.INGEST, lead_id="")
        if scrub.matches(d.raw_value) or scrub.matches(d.payload)
    ]
    for letter in letters:
        letter.payload = scrub.json(letter.payload, keys=PERSONAL_KEYS - {"name"})
        if isinstance(letter.payload, dict) and isinstance(letter.payload.get("customer"), dict):
            letter.payload["customer"] = {k: ERASED if v else v for k, v in letter.payload["customer"].items()}
        letter.raw_value = scrub.raw(
            letter.raw_value, keys=frozenset({"wa_id", "user_id", "parent_user_id", "username", "text"})
        )
        letter.kafka_key = scrub.raw(letter.kafka_key)
        letter.kafka_headers = scrub.json(letter.kafka_headers)
        for name in ("error_message", "traceback", "resolution_note"):
            setattr(letter, name, scrub.text(getattr(letter, name)))
        letter.saga_state = scrub.json(letter.saga_state)
        letter.requeue_history = scrub.json(letter.requeue_history)
        letter.lead_id = own_lead.get(letter.lead_id, letter.lead_id)
        if letter.status == DeadLetter.Status.OPEN:
            # Its record no longer holds the message: nothing is left to requeue.
            letter.status, letter.resolution_note, letter.closed_by = DeadLetter.Status.DISCARDED, "customer erased", by
    DeadLetter.objects.bulk_update(
        letters,
        [
            "payload",
            "raw_value",
            "kafka_key",
            "kafka_headers",
            "error_message",
            "traceback",
            "resolution_note",
            "saga_state",
            "requeue_history",
            "lead_id",
            "status",
            "closed_by",
        ],
    )
    changed["dlq_deadletter"] += len(letters)

    flags = list(ReviewFlag.objects.filter(lead__in=leads))
    for flag in flags:
        flag.detail = scrub.json(flag.detail)
    ReviewFlag.objects.bulk_update(flags, ["detail"])
    changed["leads_reviewflag"] += len(flags)
    notes = list(SalesNotification.objects.filter(lead__in=leads))
    for note in notes:
        note.payload = scrub.json(note.payload)
    SalesNotification.objects.bulk_update(notes, ["payload"])
    changed["leads_salesnotification"] += len(notes)
    tickets = list(SupportTicket.objects.filter(lead__in=leads).select_related("order"))
    for ticket in tickets:
        # The reference the customer typed is theirs unless it named the order found.
        if ticket.order is None or ticket.order.reference != ticket.order_reference:
            ticket.order_reference = ERASED if ticket.order_reference else ""
    SupportTicket.objects.bulk_update(tickets, ["order_reference"])
    changed["leads_supportticket"] += len(tickets)

    personal_aliases = [a.pk for a in aliases if scrub.matches(a.alias)]
    changed["leads_leadalias"] += LeadAlias.objects.filter(pk__in=personal_aliases).delete()[0]

    activities = [a for a in LeadActivity.objects.filter(lead__in=leads) if scrub.matches(a.detail)]
    for lead in leads:
        erasure_id = erasure.pk if lead.pk == leads[0].pk else next(e.pk for e in extra if e.lead_id == lead.pk)
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('leads.erasure', %s, true)", [str(erasure_id)])
        mine = [a for a in activities if a.lead_id == lead.pk]
        for activity in mine:
            LeadActivity.objects.filter(pk=activity.pk).update(detail=scrub.json(activity.detail))
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('leads.erasure', '', true)")
    changed["leads_leadactivity"] += len(activities)

    for lead in leads:
        lead.wa_id = lead.user_id = lead.parent_user_id = lead.username = lead.customer_name = ""
        lead.save(update_fields=["wa_id", "user_id", "parent_user_id", "username", "customer_name", "updated_at"])
    changed["leads_lead"] += len(leads)

    result = dict(sorted(changed.items()))
    Erasure.objects.filter(pk__in=[erasure.pk, *(e.pk for e in extra)]).update(changed=result)
    LeadActivity.objects.bulk_create(
        [
            LeadActivity(
                lead=lead, kind="customer_erased", detail={"by": by, "erasure_id": erasure.pk, "changed": result}
            )
            for lead in leads
        ]
    )
    return result


# Webhook fields other than `messages` whose value names a customer.
CUSTOMER_FIELDS = ("user_preferences", "user_id_update", "history", "smb_message_echoes")
# How long before its status row a status's delivery can have been stored (same transaction).
_WINDOW = timedelta(minutes=1)


def _scrub_value(document: Any, scrub: Scrubber, identifiers: set[str], wamids: list[str]) -> Any:
    """A webhook document: the customer's own items (contacts, messages, statuses) lose every
    personal value; the rest loses the customer's identifiers only (other customers' texts stay)."""
    ids = Scrubber(identifiers | set(wamids))
    own = frozenset(identifiers)

    def mine(item: Any) -> bool:
        return isinstance(item, dict) and ids.matches(item)

    def walk(value: Any) -> Any:
        if isinstance(value, list):
            return [scrub.json(item, keys=PERSONAL_KEYS) if mine(item) else walk(item) for item in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, str):
            return ids.text(value) if own else value
        return value

    return walk(document)
