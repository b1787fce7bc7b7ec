"""Stages 1 and 2: dedupe claims the inbox row, then intent resolves the tenant,
upserts the lead, picks the handler and writes the plan."""

from __future__ import annotations

import logging

from django.db import transaction

from core import tracing
from core.metrics import counters
from leads import states
from leads.models import LeadActivity
from whatsapp.handlers import opt_out
from whatsapp.handlers.base import Catalog, MessageContext
from whatsapp.handlers.registry import plan as plan_for
from whatsapp.models import ProcessedMessage, SagaStep
from whatsapp.saga.run import (
    PermanentStageError,
    active_message,
    business_of,
    load_event,
    upsert_lead,
)

log = logging.getLogger(__name__)


def claim(processing_id: str, saga_run: int) -> bool:
    """RECEIVED -> PROCESSING, atomically; False for any other state."""
    row = ProcessedMessage.claim(processing_id, saga_run)
    if row is not None:
        tracing.note_message(row)
    return row is not None


def plan_run(processing_id: str, saga_run: int) -> list[SagaStep]:
    """Resolve the tenant, upsert the lead, pick the handler and write the plan.
    A second call for the same run returns the plan already written."""
    with transaction.atomic():
        message = active_message(processing_id, saga_run, lock=True)
        if message.planned_run == saga_run:
            return list(message.saga_steps.filter(saga_run=saga_run).order_by("order"))
        event = load_event(message)
        with tracing.span("whatsapp.tenant", "resolve the business and tenant"):
            business = business_of(message)
            if event.tenant_id is not None and event.tenant_id != business.tenant_id:
                raise PermanentStageError(f"tenant_id does not match business {business.business_id}")
        lead = upsert_lead(event, business)
        context = MessageContext(event=event, business=business, lead=lead, catalog=Catalog(business))
        with tracing.span("whatsapp.handler", "choose the handler and plan the actions") as handler_span:
            decision = plan_for(context)
            handler_span.set_data("handler", decision.handler)
            handler_span.set_data("actions", [a.name for a in decision.actions])
        steps = SagaStep.objects.bulk_create(
            [
                SagaStep(message=message, saga_run=saga_run, order=index, action=action.name, params=action.params)
                for index, action in enumerate(decision.actions, start=1)
            ]
        )
        message.handler = decision.handler
        message.reply_text = decision.reply_text or ""
        # For a template, should the window have closed by the time the reply goes (same UPDATE).
        message.reply_kind = decision.reply_kind if decision.reply_text else ""
        message.reply_fields = {**decision.reply_fields, "language": context.language} if message.reply_kind else None
        message.planned_run = saga_run
        message.lead_record = lead
        message.save(
            update_fields=[
                "handler",
                "reply_text",
                "reply_kind",
                "reply_fields",
                "planned_run",
                "lead_record",
                "updated_at",
            ]
        )
        activities = [
            LeadActivity(
                lead=lead,
                kind="message_received",
                processing_id=processing_id,
                detail={
                    "intent": event.intent.value,
                    "confidence": event.confidence,
                    "handler": decision.handler,
                    "actions": [a.name for a in decision.actions],
                    "escalate": decision.should_escalate,
                    "saga_run": saga_run,
                    "note": decision.note,
                },
            )
        ]
        if decision.consent:
            # A STOP or START keyword (whatsapp.handlers.opt_out): the lead's own method writes its activity.
            change = lead.opt_out if decision.consent == opt_out.OPT_OUT else lead.opt_in
            change(source="keyword", processing_id=processing_id)
        if decision.lead_state:
            moved = states.move(lead, decision.lead_state, processing_id=processing_id, reason=decision.handler)
            if moved is not None:
                activities.append(moved)
        LeadActivity.objects.bulk_create(activities)
        counters.planned(event.intent.value, event.confidence, event.ai.processing_ms if event.ai else None)
        log.info(
            "intent: %s planned %s with handler %s",
            event.intent.value,
            ", ".join(a.name for a in decision.actions) or "no action",
            decision.handler,
        )
        return steps
