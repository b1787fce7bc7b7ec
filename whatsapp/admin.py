"""Admin for the inbox, its saga steps, replies sent, the webhook's deliveries and inbound
messages, and the circuit breakers.

The inbox and replies are the pipeline's own records and are read-only. The
breakers have no table (their state lives in Redis): their page lists
core.breakers.all_breakers() and, for users with the change permission,
forces one open, closed or back to a clean state, each a LogEntry.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from core import breakers
from core.admin_display import ReadOnlyModelAdmin, ReadOnlyTabularInline, pre, pre_json
from dlq.models import DeadLetter
from whatsapp.admin_templates import ReplyTemplateAdmin
from whatsapp.admin_webhook import AccountNoticeAdmin, InboundMessageAdmin, MessageTemplateAdmin, WebhookChangeAdmin
from whatsapp.models import (
    CircuitBreaker,
    DeliveryStatus,
    DuplicateDelivery,
    OutboundMessage,
    ProcessedMessage,
    SagaStep,
    WebhookDelivery,
)


class SagaStepInline(ReadOnlyTabularInline):
    model = SagaStep
    # Every column shown, none editable: one tuple serves as both.
    fields = readonly_fields = (
        "saga_run",
        "order",
        "action",
        "status",
        "attempts",
        "error",
        "compensation_error",
        "updated_at",
    )
    ordering = ["saga_run", "order"]


@admin.register(ProcessedMessage)
class ProcessedMessageAdmin(ReadOnlyModelAdmin):
    list_display = [
        "processing_id",
        "status",
        "intent",
        "business_id",
        "lead_id",
        "saga_run",
        "received_at",
        "duration",
        "trace_id",
    ]
    # Indexed columns only: the inbox is the biggest table.
    list_filter = ["status", "intent", "business_id", "received_at"]
    search_fields = ["processing_id", "lead_id", "trace_id"]
    date_hierarchy = "received_at"
    show_full_result_count = False
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "processing_id",
                    "status",
                    "dead_letters",
                    "business_id",
                    "lead_id",
                    "intent",
                    "handler",
                    "saga_run",
                    "planned_run",
                    "attempts",
                    "trace_id",
                ]
            },
        ),
        ("Timings", {"fields": ["received_at", "started_at", "finished_at", "duration", "updated_at"]}),
        ("Kafka", {"fields": ["kafka_coordinates", "kafka_timestamp"]}),
        ("Failure", {"fields": ["failed_stage", "failure_reason", "last_error", "traceback"]}),
        ("Message", {"fields": ["event", "reply_text"]}),
    ]
    readonly_fields = ["dead_letters", "duration", "kafka_coordinates", "traceback", "event"]
    inlines = [SagaStepInline]

    @admin.display(description="took")
    def duration(self, obj: ProcessedMessage) -> str:
        if obj.started_at and obj.finished_at:
            return f"{(obj.finished_at - obj.started_at).total_seconds():.2f} s"
        return "-"

    @admin.display(description="Kafka coordinates")
    def kafka_coordinates(self, obj: ProcessedMessage) -> str:
        return f"{obj.kafka_topic} [{obj.kafka_partition}] @ {obj.kafka_offset}" if obj.kafka_topic else "-"

    @admin.display(description="traceback")
    def traceback(self, obj: ProcessedMessage) -> str:
        return pre(obj.last_traceback) if obj.last_traceback else "-"

    @admin.display(description="event")
    def event(self, obj: ProcessedMessage) -> str:
        return pre_json(obj.payload)

    @admin.display(description="dead letters")
    def dead_letters(self, obj: ProcessedMessage) -> str:
        count = DeadLetter.objects.filter(processing_id=obj.processing_id).count()
        if not count:
            return "none"
        url = reverse("admin:dlq_deadletter_changelist") + "?" + urlencode({"processing_id": obj.processing_id})
        return format_html('<a href="{}">{} entr{}</a>', url, count, "y" if count == 1 else "ies")


@admin.register(DuplicateDelivery)
class DuplicateDeliveryAdmin(ReadOnlyModelAdmin):
    list_display = ["processing_id", "kafka_topic", "kafka_partition", "kafka_offset", "created_at"]
    search_fields = ["processing_id"]


@admin.register(OutboundMessage)
class OutboundMessageAdmin(ReadOnlyModelAdmin):
    list_display = [
        "idempotency_key",
        "business",
        "lead",
        "status",
        "template_name",
        "delivery_status",
        "error_code",
        "attempts",
        "created_at",
        "sent_at",
        "delivered_at",
        "read_at",
        "failed_at",
    ]
    list_filter = ["status", "delivery_status", "business", "error_code"]
    search_fields = ["processing_id", "idempotency_key", "wamid", "lead__lead_id"]
    list_select_related = ["business", "lead"]


@admin.register(DeliveryStatus)
class DeliveryStatusAdmin(ReadOnlyModelAdmin):
    """Meta's status notifications as they came, and what applying each one did."""

    list_display = ["wamid", "status", "occurred_at", "error_code", "error_title", "outcome", "received_at"]
    list_filter = ["status", "outcome", "error_code"]
    search_fields = ["wamid", "recipient_id"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyModelAdmin):
    """Each signed delivery from Meta as it came, to read what a message or status really said."""

    list_display = ["id", "received_at", "messages", "new_messages", "duplicates", "unroutable", "statuses"]
    exclude = ["body"]
    readonly_fields = ["raw_body"]

    @admin.display(description="body (as received)")
    def raw_body(self, obj: WebhookDelivery) -> str:
        return pre(bytes(obj.body).decode("utf-8", errors="replace"))


@admin.register(CircuitBreaker)
class CircuitBreakerAdmin(admin.ModelAdmin):
    """One page: every breaker's state, with force-open / force-close / reset buttons."""

    OPERATIONS = {
        "open": (breakers.force_open, "Forced open"),
        "close": (breakers.force_close, "Forced closed"),
        "reset": (breakers.reset, "Reset"),
    }

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: CircuitBreaker | None = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            return self._operate(request)
        snapshots = breakers.all_breakers()
        for snap in snapshots:
            opened = snap.get("opened_at")
            snap["opened"] = datetime.fromtimestamp(opened, tz=UTC) if opened else None
        context = {
            **self.admin_site.each_context(request),
            "title": "Circuit breakers",
            "opts": self.model._meta,
            "breakers": snapshots,
            "can_operate": self.has_change_permission(request),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/whatsapp/circuitbreaker/change_list.html", context)

    def _operate(self, request: HttpRequest) -> HttpResponse:
        if not self.has_change_permission(request):
            raise PermissionDenied
        name, op = request.POST.get("name", ""), request.POST.get("op", "")
        if op not in self.OPERATIONS:
            self.message_user(request, f"Unknown operation {op!r}.", messages.ERROR)
        elif name not in {snap["name"] for snap in breakers.all_breakers()}:
            self.message_user(request, f"No breaker named {name!r}.", messages.ERROR)
        else:
            operation, done = self.OPERATIONS[op]
            operation(name)
            self.log_change(request, CircuitBreaker(name=name), done)
            self.message_user(request, f"{done}: {name}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:whatsapp_circuitbreaker_changelist"))

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # There is no row to show (a LogEntry links here): the list has it all.
        return HttpResponseRedirect(reverse("admin:whatsapp_circuitbreaker_changelist"))

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return self.change_view(request, object_id)


__all__ = [
    "AccountNoticeAdmin",
    "InboundMessageAdmin",
    "MessageTemplateAdmin",
    "ReplyTemplateAdmin",
    "WebhookChangeAdmin",
]


@admin.action(permissions=["erase_customer"], description="Erase selected customers' personal data…")
def erase_customers(model_admin: admin.ModelAdmin, request: HttpRequest, queryset: Any) -> HttpResponse:
    """First POST: a page asking to confirm. Second POST (confirm=yes): erase each customer
    (whatsapp.ops.erasure) and show what changed per table; one in flight is refused, named."""
    from whatsapp.ops.erasure import CustomerInFlight, erase_customer

    leads = list(queryset.select_related("business"))
    if request.POST.get("confirm") != "yes":
        return TemplateResponse(request, "admin/leads/lead/erase_confirm.html", {"leads": leads, "changed": None})
    done = []
    for lead in leads:
        try:
            changed = erase_customer(
                lead.business, lead.wa_id or lead.user_id or lead.lead_id, by=request.user.get_username()
            )
        except CustomerInFlight as exc:
            model_admin.message_user(request, f"{lead.lead_id}: {exc}", messages.ERROR)
            continue
        done.append((lead.lead_id, list(changed.items())))
    return TemplateResponse(request, "admin/leads/lead/erase_confirm.html", {"leads": leads, "changed": done})


def _with_erasure() -> None:
    from leads.models import Lead

    lead_admin = admin.site.get_model_admin(Lead)
    lead_admin.actions = [*(lead_admin.actions or []), erase_customers]


_with_erasure()
