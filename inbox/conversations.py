"""What the inbox's pages show, as JSON-ready values: the list of conversations and one
customer's thread. The pages render nothing themselves: their script draws these (so the
first paint and every refresh go through one path) and asks again every POLL_SECONDS.

Every query is bounded (a page of leads, a thread's newest THREAD_LIMIT items of each kind)
and served by an index (the leads' updated_at; the lead foreign keys of the
inbox rows, replies and activities; the dead letters' lead_id), so a poll costs a web
worker milliseconds: the overview's reasoning (whatsapp.ops.overview.views) applies.

Text shown is what the customer and the agents wrote and what the bot said: the page is for
staff who may view conversations (inbox.view_conversation), as the admin's own pages are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone

from dlq.models import DeadLetter
from leads.models import Lead, LeadActivity
from whatsapp.models import InboundMessage, OutboundMessage, ProcessedMessage, SagaStep
from whatsapp.send.reply import CUSTOMER_SERVICE_WINDOW, window_open

PAGE_SIZE = 50
THREAD_LIMIT = 200
# The activities an agent wants in the thread (the rest are in the lead's admin page).
THREAD_ACTIVITIES = (
    "taken_over",
    "handed_back",
    "agent_replied",
    "flagged_for_review",
    "opted_out",
    "opted_in",
    "state_changed",
)


@dataclass(frozen=True)
class Filters:
    """The list's filters, as the query string spells them (all optional)."""

    business: str = ""
    needs_review: bool = False
    taken_over: bool = False
    window_open: bool = False

    @classmethod
    def from_query(cls, query: Any) -> Filters:
        def on(name: str) -> bool:
            return query.get(name, "") in {"1", "on", "true", "yes"}

        return cls(
            business=query.get("business", "")[:64],
            needs_review=on("needs_review"),
            taken_over=on("taken_over"),
            window_open=on("window_open"),
        )


def conversations(filters: Filters, now: datetime | None = None) -> QuerySet[Lead]:
    """The leads, newest activity first: a lead's updated_at moves with each of its messages
    (leads.models.identity's upsert), a take over, a hand back and an agent's reply."""
    now = now or timezone.now()
    qs = Lead.objects.select_related("business", "taken_over_by")
    if filters.business:
        qs = qs.filter(business__business_id=filters.business)
    if filters.needs_review:
        qs = qs.filter(needs_review=True)
    if filters.taken_over:
        qs = qs.filter(taken_over_by__isnull=False, taken_over_until__gt=now)
    if filters.window_open:
        qs = qs.filter(last_inbound_at__gt=now - CUSTOMER_SERVICE_WINDOW)
    return qs.order_by("-updated_at", "-pk")


def list_data(filters: Filters, now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    leads = list(conversations(filters, now)[:PAGE_SIZE])
    return {"generated_at": now.isoformat(), "conversations": [_summary(lead, now) for lead in leads]}


def _summary(lead: Lead, now: datetime) -> dict[str, Any]:
    return {
        "business": lead.business.business_id,
        "lead_id": lead.lead_id,
        "name": lead.display_name,
        "updated_at": lead.updated_at.isoformat(),
        "last_inbound_at": _iso(lead.last_inbound_at),
        **state(lead, now),
        "url": reverse("inbox:thread", args=[lead.business.business_id, lead.lead_id]),
    }


def state(lead: Lead, now: datetime | None = None) -> dict[str, Any]:
    """What the forms depend on: who holds it, whether the window is open, whether it needs
    review, whether the customer opted out."""
    now = now or timezone.now()
    held = lead.is_taken_over(now)
    closes = lead.last_inbound_at + CUSTOMER_SERVICE_WINDOW if lead.last_inbound_at else None
    return {
        "needs_review": lead.needs_review,
        "taken_over": held,
        "taken_over_by": lead.taken_over_by.get_username() if held and lead.taken_over_by else "",
        "taken_over_until": _iso(lead.taken_over_until) if held else None,
        "window_open": window_open(lead.last_inbound_at, now),
        # The customer opted out (docs/operating/opt-out.md): nothing automatic goes to them.
        "opted_out": lead.opted_out_at is not None,
        "window_closes_at": _iso(closes),
    }


def thread(lead: Lead, now: datetime | None = None) -> dict[str, Any]:
    """One customer's conversation in time order (oldest first): their messages with the AI's
    intent and confidence, each run's actions and outcome, the replies (the bot's and the
    agents', with their ticks, and those not sent), dead letters and the agents' activities."""
    now = now or timezone.now()
    items = [*_messages(lead), *_replies(lead), *_dead_letters(lead), *_activities(lead)]
    items.sort(key=lambda item: (_moment(item["at"]), item["order"]))
    return {
        "generated_at": now.isoformat(),
        "lead": {
            "business": lead.business.business_id,
            "lead_id": lead.lead_id,
            "name": lead.display_name,
            "admin_url": reverse("admin:leads_lead_change", args=[lead.pk]),
            **state(lead, now),
        },
        "items": items,
    }


def _messages(lead: Lead) -> list[dict[str, Any]]:
    rows = list(ProcessedMessage.objects.filter(lead_record=lead).order_by("-received_at")[:THREAD_LIMIT])
    ids = [row.processing_id for row in rows]
    inbound = {m.processing_id: m for m in InboundMessage.objects.filter(processing_id__in=ids)}
    steps: dict[int, list[SagaStep]] = {}
    for step in SagaStep.objects.filter(message__in=rows).order_by("saga_run", "order"):
        steps.setdefault(step.message_id, []).append(step)
    items = []
    for row in rows:
        payload = row.payload if isinstance(row.payload, dict) else {}
        found = payload.get("message")
        message: dict[str, Any] = found if isinstance(found, dict) else {}
        webhook = inbound.get(row.processing_id)
        items.append(
            {
                "kind": "inbound",
                "at": message.get("received_at") or row.received_at.isoformat(),
                "order": 0,
                "text": str(message.get("text", "")),
                "type": webhook.type if webhook else "text",
                "media_mime_type": webhook.media_mime_type if webhook else "",
                "caption": webhook.media_caption if webhook else "",
                "intent": row.intent,
                "confidence": payload.get("confidence"),
                "status": row.status,
                "failed_stage": row.failed_stage,
                "actions": [
                    {"action": s.action, "status": s.status}
                    for s in steps.get(row.pk, [])
                    if s.saga_run == row.saga_run
                ],
                "admin_url": reverse("admin:whatsapp_processedmessage_change", args=[row.pk]),
            }
        )
    return items


def _replies(lead: Lead) -> list[dict[str, Any]]:
    rows = OutboundMessage.objects.filter(lead=lead).select_related("sent_by").order_by("-created_at")[:THREAD_LIMIT]
    return [
        {
            "kind": "agent_reply" if row.sent_by_id else "bot_reply",
            "at": row.created_at.isoformat(),
            "order": 1,
            "text": row.body,
            "by": row.sent_by.get_username() if row.sent_by else "",
            "status": row.status,
            "ticks": row.delivery_status,
            "template": row.template_name,
            "error": row.error_title,
            "admin_url": reverse("admin:whatsapp_outboundmessage_change", args=[row.pk]),
        }
        for row in rows
    ]


def _dead_letters(lead: Lead) -> list[dict[str, Any]]:
    ids = [lead.lead_id, *lead.aliases.values_list("alias", flat=True)]
    rows = DeadLetter.objects.filter(business_id=lead.business.business_id, lead_id__in=ids).order_by("-created_at")
    return [
        {
            "kind": "dead_letter",
            "at": row.created_at.isoformat(),
            "order": 2,
            "stage": row.stage,
            "reason": row.reason,
            "status": row.status,
            "admin_url": reverse("admin:dlq_deadletter_change", args=[row.pk]),
        }
        for row in rows[:THREAD_LIMIT]
    ]


def _activities(lead: Lead) -> list[dict[str, Any]]:
    rows = LeadActivity.objects.filter(lead=lead, kind__in=THREAD_ACTIVITIES).order_by("-created_at")
    return [
        {
            "kind": "activity",
            "at": row.created_at.isoformat(),
            "order": 3,
            "activity": row.kind,
            "by": str(row.detail.get("by", "")) if isinstance(row.detail, dict) else "",
            # Activities have no admin page of their own: the lead's lists them.
            "admin_url": reverse("admin:leads_lead_change", args=[lead.pk]),
        }
        for row in rows[:THREAD_LIMIT]
    ]


def _moment(iso: str) -> datetime:
    """An item's time for sorting: the customer's own received_at may carry any UTC offset."""
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
