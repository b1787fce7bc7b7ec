"""Keeping a verified delivery: one short transaction, then Meta gets its 200.

The delivery's raw body, a row per message (keyed by the unique wamid: a redelivery inserts
nothing, INSERT ... ON CONFLICT DO NOTHING) and its statuses go in together or not at all.
Messages are routed to a business by the phone-number id they were sent to; one for a number
no business (or more than one) has is kept as UNROUTABLE and counted, never retried. The
relay is woken by a NOTIFY, which Postgres delivers only if the transaction commits.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from django.db import connection, transaction

from core.metrics import counters
from leads.models import Business
from whatsapp.contracts.request import lead_id_for, processing_id_for
from whatsapp.edge.statuses import record_statuses
from whatsapp.edge.webhook.payload import Delivery, InboundItem
from whatsapp.models.inbound import OUTBOX_CHANNEL, InboundMessage, WebhookDelivery

log = logging.getLogger("whatsapp.webhook")


@dataclass
class StoreResult:
    delivery_id: int
    new: int = 0
    duplicates: int = 0
    unroutable: int = 0
    statuses: int = 0
    kinds: Counter[str] = field(default_factory=Counter)


def store_delivery(body: bytes, delivery: Delivery) -> StoreResult:
    """Raises only what the database raises (an outage: the caller answers 503)."""
    with transaction.atomic():
        record = WebhookDelivery.objects.create(
            body=body, messages=len(delivery.messages), statuses=delivery.status_count
        )
        result = StoreResult(delivery_id=record.pk)
        _store_messages(record, delivery.messages, result)
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
            status=result.statuses,
            ignored=delivery.ignored_changes,
        )
        counters.webhook_received(dict(result.kinds))
    return result


def _store_messages(record: WebhookDelivery, items: list[InboundItem], result: StoreResult) -> None:
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
    businesses = _route({item.phone_number_id for item in fresh})
    rows = []
    for item in fresh:
        business = businesses.get(item.phone_number_id)
        media = item.media
        rows.append(
            InboundMessage(
                wamid=item.wamid,
                delivery=record,
                business=business,
                phone_number_id=item.phone_number_id,
                wa_id=item.wa_id,
                profile_name=item.profile_name[:256],
                type=item.type,
                text=item.text,
                media_id=media.id[:256] if media else "",
                media_mime_type=media.mime_type[:255] if media else "",
                media_caption=media.caption if media else "",
                media_filename=media.filename[:255] if media else "",
                received_at=item.received_at,
                processing_id=processing_id_for(item.wamid),
                lead_id=lead_id_for(item.wa_id),
                state=InboundMessage.State.PENDING if business else InboundMessage.State.UNROUTABLE,
            )
        )
    # A redelivery racing this one (Meta retries a slow answer) inserts nothing twice; what this
    # delivery did insert carries its id, so the counts are exact either way.
    InboundMessage.objects.bulk_create(rows, ignore_conflicts=True)
    inserted = list(InboundMessage.objects.filter(delivery=record).values_list("phone_number_id", "business_id"))
    routed = sum(1 for _, business_id in inserted if business_id is not None)
    result.new += routed
    result.unroutable += len(inserted) - routed
    result.duplicates += len(rows) - len(inserted)
    if len(inserted) > routed:
        numbers = sorted({number for number, business_id in inserted if business_id is None})
        log.warning(
            "webhook: %d message(s) for phone-number id(s) %s that no single active business has; kept as unroutable",
            len(inserted) - routed,
            ", ".join(numbers),
        )
    if routed:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [OUTBOX_CHANNEL])


def _route(phone_number_ids: set[str]) -> dict[str, Business]:
    """The business of each number; a number two active businesses claim routes nowhere
    (sending one tenant's customers to another is worse than holding them)."""
    found: dict[str, list[Business]] = {}
    for business in Business.objects.filter(phone_number_id__in=phone_number_ids, is_active=True):
        found.setdefault(business.phone_number_id, []).append(business)
    return {number: matches[0] for number, matches in found.items() if len(matches) == 1}
