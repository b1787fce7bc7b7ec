"""DLQ review in the admin: find entries, read them, requeue, resolve or discard.

Entries are never edited field by field: the only writes are requeue (through
dlq.requeue, paced like the command, and only with the dlq.requeue_deadletter
permission), resolve with a note and discard with a reason (model methods, with
the change permission). Each is logged as a LogEntry per entry. A support agent
with only the view (or view and change) permission can read everything without
being able to requeue; a forged requeue POST is answered 403.
"""
from __future__ import annotations

import json
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme

from config.admin_display import pre, pre_json
from dlq.models import DeadLetter, EntryNotOpen
from dlq.requeue import requeue_many

# The admin requeues synchronously, paced at DLQ_REQUEUE_RATE_PER_SECOND; a
# request should not take longer than this. Larger batches: `manage.py dlq requeue`.
ADMIN_REQUEUE_SECONDS = 30


class CloseForm(forms.Form):
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 80}), strip=True)


CLOSINGS = {
    # action name: (model method, past tense, what the note is called)
    "resolve_selected": ("resolve", "Resolved", "note"),
    "discard_selected": ("discard", "Discarded", "reason"),
}


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ["id", "created_at", "status", "stage", "reason", "business_id", "processing_id", "short_error",
                    "requeues"]
    list_filter = ["status", "stage", "reason", "business_id", "created_at"]
    search_fields = ["processing_id", "lead_id", "error_message", "error_class"]
    date_hierarchy = "created_at"
    actions = ["requeue_selected", "resolve_selected", "discard_selected"]
    fieldsets = [
        (None, {"fields": ["status", "stage", "reason", "processing_id", "inbox_message", "business_id", "lead_id",
                           "trace_id", "created_at", "updated_at"]}),
        ("Error", {"fields": ["error_class", "error", "attempts", "traceback_text"]}),
        ("Payload", {"fields": ["payload_json", "raw_record"]}),
        ("Saga", {"fields": ["saga_run", "saga_steps"]}),
        ("Kafka", {"fields": ["kafka_coordinates", "kafka_timestamp", "record_key", "record_headers"]}),
        ("Requeues and resolution", {"fields": ["requeue_count", "requeue_log", "resolution_note", "closed_by",
                                                "closed_at", "related_entries"]}),
    ]
    readonly_fields = [field for _, options in fieldsets for field in options["fields"]]

    # -- permissions ------------------------------------------------------------------
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: DeadLetter | None = None) -> bool:
        return False  # discard instead; `manage.py dlq purge` removes old closed entries

    def has_requeue_permission(self, request: HttpRequest, obj: DeadLetter | None = None) -> bool:
        return request.user.has_perm("dlq.requeue_deadletter")

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if request.method == "POST" and "action" in request.POST:
            self._refuse_forbidden_action(request)
        return super().changelist_view(request, {"title": "Dead letters", **(extra_context or {})})

    def _refuse_forbidden_action(self, request: HttpRequest) -> None:
        """A POST naming an action this user may not run is refused outright, not
        quietly ignored, so a forged request cannot pass unnoticed."""
        try:
            name = request.POST.getlist("action")[int(request.POST.get("index", 0))]
        except (IndexError, ValueError):
            return
        ours = {action if isinstance(action, str) else action.__name__ for action in self.actions}
        if name in ours and name not in self.get_actions(request):
            raise PermissionDenied(f"you may not {name.removesuffix('_selected')} dead letters")

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict | None = None) -> HttpResponse:
        if request.method == "POST":
            raise PermissionDenied("dead letters change only through requeue, resolve or discard")
        entry = self.get_object(request, object_id)
        is_open = entry is not None and entry.status == DeadLetter.Status.OPEN
        context = {
            "title": "Dead letter",
            "show_save": False, "show_save_and_continue": False, "show_save_and_add_another": False,
            "show_delete": False, "is_open": is_open,
            "can_requeue": is_open and self.has_requeue_permission(request),
            "can_close": is_open and self.has_change_permission(request, entry),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, context)

    # -- actions ----------------------------------------------------------------------
    @admin.action(permissions=["requeue"], description="Requeue selected dead letters")
    def requeue_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
        ids = list(queryset.order_by("created_at", "pk").values_list("pk", flat=True))
        limit = max(1, int(settings.DLQ_REQUEUE_RATE_PER_SECOND * ADMIN_REQUEUE_SECONDS))
        if len(ids) > limit:
            self.message_user(request, f"{len(ids)} entries selected; the admin requeues at most {limit} at a time. "
                                       "Use `manage.py dlq requeue` with the same filters for more.", messages.ERROR)
            return self._back(request)
        report = requeue_many(ids, by=request.user.get_username())
        for entry in report.requeued:
            run = entry.requeue_history[-1].get("saga_run")
            self.log_change(request, entry, f"Requeued (saga run {run})." if run else "Requeued.")
        if report.requeued:
            self.message_user(request, f"Requeued {len(report.requeued)} dead letter(s).", messages.SUCCESS)
        for _, why in report.refused:
            self.message_user(request, f"Not requeued: {why}", messages.WARNING)
        return self._back(request)

    @admin.action(permissions=["change"], description="Resolve selected dead letters (with a note)…")
    def resolve_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
        return self._close(request, queryset, "resolve_selected")

    @admin.action(permissions=["change"], description="Discard selected dead letters (with a reason)…")
    def discard_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
        return self._close(request, queryset, "discard_selected")

    def _close(self, request: HttpRequest, queryset: QuerySet, action: str) -> HttpResponse:
        """First POST: a page asking for the note. Second POST (with "apply"): do it."""
        method, done, note_name = CLOSINGS[action]
        form = CloseForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            note, closed, refused = form.cleaned_data["note"], 0, []
            for entry in queryset:
                try:
                    getattr(entry, method)(note, by=request.user.get_username())
                except EntryNotOpen as exc:
                    refused.append(str(exc))
                    continue
                self.log_change(request, entry, f"{done}: {note}")
                closed += 1
            if closed:
                self.message_user(request, f"{done} {closed} dead letter(s).", messages.SUCCESS)
            for why in refused:
                self.message_user(request, f"Not {done.lower()}: {why}", messages.WARNING)
            return self._back(request)
        context = {
            **self.admin_site.each_context(request),
            "title": f"{method.capitalize()} dead letters",
            "opts": self.model._meta,
            "entries": queryset,
            "form": form,
            "action": action,
            "verb": method,
            "note_name": note_name,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "next": self._next(request) or "",
        }
        return TemplateResponse(request, "admin/dlq/deadletter/close.html", context)

    def _next(self, request: HttpRequest) -> str | None:
        target = request.POST.get("next")
        if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
            return target
        return None

    def _back(self, request: HttpRequest) -> HttpResponse:
        """To the entry's page when the action was started there, else to the list."""
        return HttpResponseRedirect(self._next(request) or request.get_full_path())

    # -- how an entry reads -----------------------------------------------------------
    @admin.display(description="requeues", ordering="requeue_count")
    def requeues(self, obj: DeadLetter) -> int:
        return obj.requeue_count

    @admin.display(description="error")
    def short_error(self, obj: DeadLetter) -> str:
        text = obj.error_message.splitlines()[0] if obj.error_message else ""
        return text[:80] + ("…" if len(text) > 80 else "")

    @admin.display(description="error message")
    def error(self, obj: DeadLetter):
        return pre(obj.error_message) if obj.error_message else "-"

    @admin.display(description="traceback")
    def traceback_text(self, obj: DeadLetter):
        return pre(obj.traceback) if obj.traceback else "- (none: the record was refused by validation)"

    @admin.display(description="payload")
    def payload_json(self, obj: DeadLetter):
        return pre_json(obj.payload)

    @admin.display(description="raw record")
    def raw_record(self, obj: DeadLetter):
        if obj.raw_value is None:
            return "-"
        raw = bytes(obj.raw_value)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return pre(f"not UTF-8 ({len(raw)} bytes): {raw[:4096]!r}")
        try:
            return pre_json(json.loads(text))
        except ValueError:
            return pre(text[:65536])

    @admin.display(description="inbox message")
    def inbox_message(self, obj: DeadLetter):
        from whatsapp.models import ProcessedMessage

        row = ProcessedMessage.objects.filter(processing_id=obj.processing_id).only("pk", "status").first() \
            if obj.processing_id else None
        if row is None:
            return "-"
        url = reverse("admin:whatsapp_processedmessage_change", args=[row.pk])
        return format_html('<a href="{}">{}</a> ({})', url, obj.processing_id, row.status)

    @admin.display(description="steps at failure")
    def saga_steps(self, obj: DeadLetter):
        state = obj.saga_state or {}
        steps = state.get("steps") or []
        if not steps:
            return "-"
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td><strong>{}</strong></td><td>{}</td><td>{}</td></tr>",
            ((s.get("order"), s.get("action"), s.get("status"), s.get("attempts"),
              s.get("error") or s.get("compensation_error") or "") for s in steps),
        )
        return format_html(
            '<p>handler: {}</p><table class="saga-steps"><thead><tr><th>#</th><th>action</th><th>state</th>'
            "<th>attempts</th><th>error</th></tr></thead><tbody>{}</tbody></table>",
            state.get("handler") or "-", rows,
        )

    @admin.display(description="topic [partition] @ offset")
    def kafka_coordinates(self, obj: DeadLetter) -> str:
        if not obj.kafka_topic:
            return "-"
        return f"{obj.kafka_topic} [{obj.kafka_partition}] @ {obj.kafka_offset}"

    @admin.display(description="key")
    def record_key(self, obj: DeadLetter) -> str:
        if obj.kafka_key is None:
            return "-"
        return bytes(obj.kafka_key).decode("utf-8", errors="backslashreplace")

    @admin.display(description="headers")
    def record_headers(self, obj: DeadLetter):
        return pre_json(obj.kafka_headers)

    @admin.display(description="requeue history")
    def requeue_log(self, obj: DeadLetter):
        if not obj.requeue_history:
            return "never requeued"
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                                ((h.get("at"), h.get("by"), h.get("saga_run") or "-") for h in obj.requeue_history))
        return format_html('<table class="requeue-history"><thead><tr><th>when</th><th>by</th><th>saga run</th>'
                           "</tr></thead><tbody>{}</tbody></table>", rows)

    @admin.display(description="same message")
    def related_entries(self, obj: DeadLetter):
        """The entry this one follows (a requeue that failed again) and the ones after it."""
        if not obj.processing_id:
            return "-"
        others = DeadLetter.objects.filter(processing_id=obj.processing_id).exclude(pk=obj.pk).count()
        if not others:
            return "no other entry"
        url = reverse("admin:dlq_deadletter_changelist") + "?" + urlencode({"processing_id": obj.processing_id})
        return format_html('<a href="{}">{} other entr{} for {}</a>', url, others, "y" if others == 1 else "ies",
                           obj.processing_id)
