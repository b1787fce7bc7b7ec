"""Keeping a verified delivery: one short transaction, then Meta gets its 200.

The delivery's raw body, a row per change (with its field), a row per message (keyed by the
unique wamid: a redelivery inserts nothing, INSERT ... ON CONFLICT DO NOTHING), a row per
item we could not read (UNREADABLE, with its JSON path) and the statuses go in together or
not at all. Messages are routed to a business by the phone-number id they were sent to and
joined to their customer's lead (leads.models.identity: by BSUID, else by number); one for a
number no business (or more than one) has is kept as UNROUTABLE and counted, and runs once
the number is configured (route_unroutable). A system notice that the customer changed
number or BSUID is applied to the lead here and never published. The relay is woken by a
NOTIFY, which Postgres delivers only if the transaction commits.

Replays are bounded: a body whose bytes were stored before (its SHA-256 is unique) is
answered 200 and stored nothing, and a message sent longer ago than Meta retries
(RETRY_HORIZON) is kept as TOO_OLD, never run unless an operator asks.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from core.metrics import counters
from leads.models import Business, CustomerIds, Lead
from whatsapp.contracts.request import processing_id_for
from whatsapp.edge.statuses import record_statuses
from whatsapp.edge.webhook.fields import UNREADABLE, apply_change, label_for
from whatsapp.edge.webhook.messages import CHANGED_NUMBER, CHANGED_USER_ID, InboundItem
from whatsapp.edge.webhook.payload import MESSAGES, Change, Delivery, UnreadableItem
from whatsapp.models import InboundMessage, WebhookChange, WebhookDelivery
from whatsapp.models.inbound import OUTBOX_CHANNEL

log = logging.getLogger("whatsapp.webhook")
State = InboundMessage.State
# Meta retries a delivery for up to 7 days; a message older than that is not a retry.
RETRY_HORIZON = timedelta(days=7)


@dataclass
class StoreResult:
    delivery_id: int
    new: int = 0
    duplicates: int = 0
    unroutable: int = 0
    unreadable: int = 0
    system: int = 0
    statuses: int = 0
    too_old: int = 0
    # The id of the delivery with the same bytes, when this one was a replay of it.
    replay_of: int | None = None
    changes: Counter[tuple[str, str]] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)


def store_delivery(body: bytes, delivery: Delivery) -> StoreResult:
    """Raises only what the database raises (an outage: the caller answers 503)."""
    digest = hashlib.sha256(body).hexdigest()
    with transaction.atomic():
        earlier = _stored_before(digest)
        if earlier is None:
            try:
                with transaction.atomic():  # a savepoint: the same bytes racing in lose here
                    record = WebhookDelivery.objects.create(
                        body=body,
                        body_sha256=digest,
                        messages=len(delivery.messages) + len(delivery.unreadable),
                        statuses=delivery.status_count,
                    )
            except IntegrityError:
                earlier = _stored_before(digest)
        if earlier is not None:
            counters.webhook_received({"replay": 1})
            return StoreResult(delivery_id=earlier, replay_of=earlier)
        result = StoreResult(delivery_id=record.pk)
        router = Router()
        _store_changes(record, delivery.changes, router, result)
        _store_messages(record, delivery.messages, router, result)
        _store_unreadable(record, delivery.unreadable, result)
        for phone_number_id, statuses in delivery.statuses.items():
            result.statuses += record_statuses(statuses, phone_number_id=phone_number_id)
        if result.new or result.duplicates or result.unroutable:
            WebhookDelivery.objects.filter(pk=record.pk).update(
                new_messages=result.new + result.unroutable, duplicates=result.duplicates, unroutable=result.unroutable
            )
        result.kinds.update(
            delivery=1,
            message=result.new,
            duplicate=result.duplicates,
            unroutable=result.unroutable,
            unreadable=result.unreadable,
            system=result.system,
            too_old=result.too_old,
            status=result.statuses,
        )
        counters.webhook_received(dict(result.kinds))
        counters.webhook_changes(dict(result.changes))
    return result


def _stored_before(digest: str) -> int | None:
    return WebhookDelivery.objects.filter(body_sha256=digest).values_list("pk", flat=True).first()


class Router:
    """The business of each phone-number id (and WhatsApp Business Account id), read once per
    delivery. A number two active businesses claim routes nowhere: sending one tenant's
    customers to another is worse than holding them."""

    def __init__(self) -> None:
        self._by_number: dict[str, Business | None] = {}

    def numbers(self, phone_number_ids: set[str]) -> dict[str, Business]:
        missing = phone_number_ids - self._by_number.keys()
        if missing:
            found: dict[str, list[Business]] = {}
            for business in Business.objects.filter(phone_number_id__in=missing, is_active=True):
                found.setdefault(business.phone_number_id, []).append(business)
            for number in missing:
                matches = found.get(number, [])
                self._by_number[number] = matches[0] if len(matches) == 1 else None
        return {n: b for n in phone_number_ids if (b := self._by_number.get(n)) is not None}

    def for_change(self, change: Change) -> Business | None:
        if change.phone_number_id:
            business = self.numbers({change.phone_number_id}).get(change.phone_number_id)
            if business is not None:
                return business
        if change.waba_id:
            matches = list(Business.objects.filter(waba_id=change.waba_id, is_active=True)[:2])
            if len(matches) == 1:
                return matches[0]
        return None


def _store_changes(record: WebhookDelivery, changes: list[Change], router: Router, result: StoreResult) -> None:
    rows = []
    for change in changes:
        if change.problems and change.field != MESSAGES:
            state, reason = str(UNREADABLE), "; ".join(change.problems)
        elif change.field == MESSAGES:
            state, reason = str(WebhookChange.State.APPLIED), "; ".join(change.problems)
        else:
            with transaction.atomic():  # a savepoint: an odd value costs this change, not the delivery
                state, reason = apply_change(change, router.for_change)
        rows.append(
            WebhookChange(
                delivery=record,
                field=change.field,
                json_path=change.path[:200],
                waba_id=change.waba_id,
                phone_number_id=change.phone_number_id,
                state=state,
                reason=reason[:2000],
                value=change.value,
            )
        )
        result.changes[(label_for(change.field), state)] += 1
        if state == UNREADABLE:
            log.warning("webhook: change %s (%s) unreadable: %s", change.path, change.field or "no field", reason)
    WebhookChange.objects.bulk_create(rows)


def _store_messages(record: WebhookDelivery, items: list[InboundItem], router: Router, result: StoreResult) -> None:
    if not items:
        return
    unique: dict[str, InboundItem] = {}
    for item in items:
        unique.setdefault(item.wamid, item)  # the same message twice in one delivery is one message
    result.duplicates += len(items) - len(unique)
    seen = set(InboundMessage.objects.filter(wamid__in=list(unique)).values_list("wamid", flat=True))
    result.duplicates += len(seen)
    fresh = [item for wamid, item in unique.items() if wamid not in seen]
    if not fresh:
        return
    businesses = router.numbers({item.phone_number_id for item in fresh})
    horizon = timezone.now() - RETRY_HORIZON
    rows = []
    for item in fresh:
        business = businesses.get(item.phone_number_id)
        state, lead_id = str(State.UNROUTABLE), ""
        if business is not None and item.received_at is not None and item.received_at < horizon:
            state = str(State.TOO_OLD)  # joins no lead until someone runs it
        elif business is not None:
            state, lead_id = _lead_of(business, item)
        rows.append(_row(record, item, business, state, lead_id))
    # A redelivery racing this one (Meta retries a slow answer) inserts nothing twice; what this
    # delivery did insert carries its id, so the counts are exact either way.
    InboundMessage.objects.bulk_create(rows, ignore_conflicts=True)
    inserted = list(
        InboundMessage.objects.filter(delivery=record, wamid__isnull=False).values_list("phone_number_id", "state")
    )
    routed = sum(1 for _, state in inserted if state == State.PENDING)
    unroutable = sum(1 for _, state in inserted if state == State.UNROUTABLE)
    result.new += routed
    result.unroutable += unroutable
    result.system += sum(1 for _, state in inserted if state == State.APPLIED)
    result.too_old += sum(1 for _, state in inserted if state == State.TOO_OLD)
    result.duplicates += len(rows) - len(inserted)
    if unroutable:
        numbers = sorted({number for number, state in inserted if state == State.UNROUTABLE})
        log.warning(
            "webhook: %d message(s) for phone-number id(s) %s that no single active business has; kept as "
            "unroutable (manage.py route_unroutable runs them once the number is configured)",
            unroutable,
            ", ".join(numbers),
        )
    if result.too_old:
        log.warning(
            "webhook: delivery %d: %d message(s) sent more than %d days ago kept as TOO_OLD, not run "
            "(the admin's inbound messages run them on request)",
            record.pk,
            result.too_old,
            RETRY_HORIZON.days,
        )
    if routed:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [OUTBOX_CHANNEL])


def lead_of(business: Business, customer: CustomerIds, received_at: datetime | None) -> str:
    """The id of the customer's lead, joined or made (route_unroutable uses it too)."""
    return Lead.objects.identify(business, customer, received_at=received_at).lead.lead_id


def _lead_of(business: Business, item: InboundItem) -> tuple[str, str]:
    """The message's state and its lead's id: a system notice of a changed identifier is
    applied to the lead and goes no further; any other message joins (or makes) its lead."""
    system = item.system
    if system is not None and system.kind in (CHANGED_NUMBER, CHANGED_USER_ID):
        lead = Lead.objects.change_identifiers(
            business, item.customer, new_wa_id=system.new_wa_id, new_user_id=system.new_user_id, source=system.kind
        )
        return State.APPLIED, lead.lead_id if lead else ""
    return State.PENDING, lead_of(business, item.customer, item.received_at)


def _row(
    record: WebhookDelivery, item: InboundItem, business: Business | None, state: str, lead_id: str
) -> InboundMessage:
    media = item.media
    customer = item.customer
    return InboundMessage(
        wamid=item.wamid,
        delivery=record,
        business=business,
        phone_number_id=item.phone_number_id,
        wa_id=customer.wa_id,
        user_id=customer.user_id,
        parent_user_id=customer.parent_user_id,
        username=customer.username,
        profile_name=customer.name[:256],
        type=item.type,
        text=item.text,
        media_id=media.id[:256] if media else "",
        media_mime_type=media.mime_type[:255] if media else "",
        media_caption=media.caption if media else "",
        media_filename=media.filename[:255] if media else "",
        received_at=item.received_at,
        processing_id=processing_id_for(item.wamid),
        lead_id=lead_id,
        json_path=item.path[:200],
        state=state,
    )


def _store_unreadable(record: WebhookDelivery, items: list[UnreadableItem], result: StoreResult) -> None:
    if not items:
        return
    rows = [
        InboundMessage(
            wamid=item.wamid or None,
            delivery=record,
            phone_number_id=item.phone_number_id[:64],
            type="",
            json_path=item.path[:200],
            state=State.UNREADABLE,
            last_error=item.reason[:1000],
        )
        for item in items
    ]
    InboundMessage.objects.bulk_create(rows, ignore_conflicts=True)
    result.unreadable += len(items)
    for item in items:
        log.warning("webhook: delivery %d: %s unreadable: %s", record.pk, item.path, item.reason)
