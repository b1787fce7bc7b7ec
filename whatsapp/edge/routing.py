"""Messages for a number no business had, run once the number is configured.

The webhook keeps a message sent to a phone-number id that no single active business has
as UNROUTABLE: it cannot know whose customer wrote. Once an operator gives a business that
number, `manage.py route_unroutable` (or the admin's action) routes each such message,
joins it to its customer's lead and hands it to the relay, in batches of short
transactions with the rows locked (SKIP LOCKED: two runs at once route each message once).
A message's processing_id was derived from its wamid when it was stored, so even a message
routed twice would run once. A message kept as TOO_OLD (sent longer ago than Meta retries)
runs the same way, but only the ones an operator picks (run_too_old).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from django.db import connection, transaction

from leads.models import CustomerIds, Lead
from whatsapp.edge.webhook.store import Router
from whatsapp.models import InboundMessage
from whatsapp.models.inbound import OUTBOX_CHANNEL

State = InboundMessage.State
BATCH = 500
_IDENTITY_CHANGES = ("user_changed_number", "user_changed_user_id")


@dataclass
class RouteResult:
    # Messages routed, by business_id.
    routed: Counter[str] = field(default_factory=Counter)
    # Messages still without a business, by phone-number id.
    still_unroutable: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.routed.values())

    def summary(self) -> str:
        routed = ", ".join(f"{n} to {business}" for business, n in sorted(self.routed.items())) or "none"
        text = f"routed {self.total} message(s): {routed}"
        if self.still_unroutable:
            waiting = ", ".join(f"{n} for {number}" for number, n in sorted(self.still_unroutable.items()))
            text += f"; still unroutable (no single active business has the number): {waiting}"
        return text


def _customer(row: InboundMessage) -> CustomerIds:
    return CustomerIds(
        wa_id=row.wa_id,
        user_id=row.user_id,
        parent_user_id=row.parent_user_id,
        username=row.username,
        name=row.profile_name,
    )


def run_too_old(pks: list[int]) -> int:
    """The TOO_OLD messages an operator chose, to the relay with their lead; how many. Rows
    another run holds are skipped, so each is run once."""
    with transaction.atomic():
        rows = list(
            InboundMessage.objects.filter(pk__in=pks, state=State.TOO_OLD, business__isnull=False)
            .select_related("business")
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("received_at", "id")
        )
        for row in rows:
            assert row.business is not None
            row.lead_id = Lead.objects.identify(row.business, _customer(row), received_at=row.received_at).lead.lead_id
            row.route(row.business)
        if rows:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, '')", [OUTBOX_CHANNEL])
    return len(rows)


def route_unroutable() -> RouteResult:
    result = RouteResult()
    router = Router()
    numbers = set(InboundMessage.objects.filter(state=State.UNROUTABLE).values_list("phone_number_id", flat=True))
    businesses = router.numbers(numbers)
    while businesses:
        with transaction.atomic():
            rows = list(
                InboundMessage.objects.filter(state=State.UNROUTABLE, phone_number_id__in=list(businesses))
                .select_for_update(skip_locked=True)
                .order_by("received_at", "id")[:BATCH]
            )
            if not rows:
                break
            for row in rows:
                business = businesses[row.phone_number_id]
                row.lead_id = Lead.objects.identify(business, _customer(row), received_at=row.received_at).lead.lead_id
                row.route(business)
                result.routed[business.business_id] += 1
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, '')", [OUTBOX_CHANNEL])
    for number in numbers - set(businesses):
        result.still_unroutable[number] = InboundMessage.objects.filter(
            state=State.UNROUTABLE, phone_number_id=number
        ).count()
    return result
