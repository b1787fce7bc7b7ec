"""Admin for what the webhook keeps beyond deliveries: the customer messages (and the items
it could not read), every change with its field, the message templates and the account
notices. All read-only: they are Meta's words. Two actions change state, each with its own
permission check: routing the UNROUTABLE messages, and acknowledging a notice."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin_display import ReadOnlyModelAdmin
from whatsapp.edge.routing import route_unroutable, run_too_old
from whatsapp.models import AccountNotice, InboundMessage, MessageTemplate, WebhookChange


@admin.register(InboundMessage)
class InboundMessageAdmin(ReadOnlyModelAdmin):
    """The webhook's customer messages and their outbox state; UNREADABLE rows are the items
    of a delivery that could not be read, with their JSON path and the reason."""

    list_display = ["wamid", "business", "customer", "type", "state", "json_path", "received_at", "published_at"]
    list_filter = ["state", "type", "business"]
    search_fields = ["wamid", "processing_id", "=wa_id", "=user_id", "username", "lead_id"]
    list_select_related = ["business"]
    actions = ["route_unroutable_messages", "run_too_old_messages"]

    @admin.display(description="customer")
    def customer(self, obj: InboundMessage) -> str:
        return (obj.username and f"@{obj.username}") or obj.user_id or obj.wa_id

    @admin.action(
        description="Route the unroutable messages whose number a business now has (all, not only the selected)"
    )
    def route_unroutable_messages(self, request: HttpRequest, queryset: QuerySet[InboundMessage]) -> None:
        if not request.user.has_perm("whatsapp.change_inboundmessage"):
            self.message_user(
                request, "Routing messages needs the change permission on inbound messages.", messages.ERROR
            )
            return
        result = route_unroutable()
        self.message_user(request, f"Route unroutable: {result.summary()}.", messages.SUCCESS)

    @admin.action(description="Run the selected messages older than Meta's retry horizon")
    def run_too_old_messages(self, request: HttpRequest, queryset: QuerySet[InboundMessage]) -> None:
        if not request.user.has_perm("whatsapp.change_inboundmessage"):
            self.message_user(
                request, "Running messages needs the change permission on inbound messages.", messages.ERROR
            )
            return
        chosen = list(queryset.values_list("pk", flat=True))
        ran = run_too_old(chosen)
        skipped = len(chosen) - ran
        text = f"Ran {ran} message(s) older than Meta's retry horizon"
        if skipped:
            text += f"; {skipped} selected were not TOO_OLD (or another run had them) and were left as they were"
        self.message_user(request, text + ".", messages.SUCCESS)


@admin.register(WebhookChange)
class WebhookChangeAdmin(ReadOnlyModelAdmin):
    list_display = ["received_at", "field", "state", "waba_id", "phone_number_id", "json_path", "reason"]
    list_filter = ["state", "field"]
    search_fields = ["field", "waba_id", "phone_number_id", "reason"]


@admin.register(MessageTemplate)
class MessageTemplateAdmin(ReadOnlyModelAdmin):
    list_display = ["name", "language", "status", "quality", "category", "waba_id", "updated_at"]
    list_filter = ["status", "quality", "category", "language"]
    search_fields = ["name", "template_id", "waba_id"]


@admin.register(AccountNotice)
class AccountNoticeAdmin(ReadOnlyModelAdmin):
    list_display = ["received_at", "severity", "summary", "business", "field", "event", "acknowledged_at"]
    list_filter = ["severity", "field", ("acknowledged_at", admin.EmptyFieldListFilter)]
    search_fields = ["summary", "event", "waba_id"]
    actions = ["acknowledge"]

    @admin.action(description="Acknowledge (the overview stops showing them)")
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[AccountNotice]) -> None:
        if not request.user.has_perm("whatsapp.change_accountnotice"):
            self.message_user(request, "Acknowledging needs the change permission on account notices.", messages.ERROR)
            return
        notices = list(queryset.filter(acknowledged_at__isnull=True))
        for notice in notices:
            notice.acknowledge(request.user.get_username())
        self.message_user(request, f"{len(notices)} notice(s) acknowledged.", messages.SUCCESS)
