"""DLQ review in the admin: find entries, read them, requeue, resolve, discard or export.

Entries are never edited field by field: the only writes are requeue (through
dlq.requeue, paced like the command, and only with the dlq.requeue_deadletter
permission), resolve with a note and discard with a reason (model methods, with
the change permission). Each is logged as a LogEntry per entry. A support agent
with only the view (or view and change) permission can read everything without
being able to requeue; a forged requeue POST is answered 403. An export (CSV or
JSON lines, dlq/export.py) is open to anyone who may view entries, but carries the
records themselves only for those who may requeue them: what one may send through
again, one may read in full.
"""

from __future__ import annotations

import logging
import shlex
from datetime import datetime

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from dlq import export
from dlq.admin_columns import DeadLetterColumns
from dlq.command_line import command_filters
from dlq.models import DeadLetter, EntryNotOpen
from dlq.requeue import requeue_many

log = logging.getLogger(__name__)

# The JSON columns, read as text on an entry's page (see dlq/display.py) and not
# at all on the list.
JSON_FIELDS = ("payload", "saga_state", "kafka_headers", "requeue_history")
# Left-over entries up to this many are named by id in the command the admin suggests.
IDS_IN_COMMAND = 100


class CloseForm(forms.Form):
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 80}), strip=True)


CLOSINGS = {
    # action name: (model method, past tense, what the note is called)
    "resolve_selected": ("resolve", "Resolved", "note"),
    "discard_selected": ("discard", "Discarded", "reason"),
}


@admin.register(DeadLetter)
class DeadLetterAdmin(DeadLetterColumns, admin.ModelAdmin):
    # Read at a glance on a 1280 px screen with the filters beside them: long values
    # (ids, errors) wrap or are cut, with the whole value in the cell's tooltip.
    list_display = [
        "id",
        "age",
        "status",
        "stage",
        "reason",
        "business",
        "message",
        "short_error",
        "requeues",
    ]
    list_filter = ["status", "stage", "reason", "business_id", "created_at"]
    search_fields = ["processing_id", "lead_id", "error_message", "error_class"]
    date_hierarchy = "created_at"
    actions = ["requeue_selected", "resolve_selected", "discard_selected", "export_csv", "export_jsonl"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "status",
                    "stage",
                    "reason",
                    "processing_id",
                    "inbox_message",
                    "business_id",
                    "lead_id",
                    "trace_id",
                    "created_at",
                    "updated_at",
                ]
            },
        ),
        ("Error", {"fields": ["error_class", "error", "attempts", "traceback_text"]}),
        ("Payload", {"fields": ["payload_json", "raw_record"]}),
        ("Saga", {"fields": ["saga_run", "saga_steps"]}),
        ("Kafka", {"fields": ["kafka_coordinates", "kafka_timestamp", "record_key", "record_headers"]}),
        (
            "Requeues and resolution",
            {
                "fields": [
                    "requeue_count",
                    "requeue_log",
                    "resolution_note",
                    "closed_by",
                    "closed_at",
                    "related_entries",
                ]
            },
        ),
    ]
    readonly_fields = [*flatten_fieldsets(fieldsets), "record_withheld"]
    # What a customer wrote, as it came: shown to those the export gives it to, no one else.
    RECORD_FIELDS = ("payload_json", "raw_record", "record_key", "record_headers")

    def get_fieldsets(self, request: HttpRequest, obj: DeadLetter | None = None) -> list:
        if self.has_requeue_permission(request):
            return self.fieldsets
        shown = []
        for name, options in self.fieldsets:
            fields = [f for f in options["fields"] if f not in self.RECORD_FIELDS]
            if name == "Payload":
                fields = ["record_withheld"]
            shown.append((name, {**options, "fields": fields}))
        return shown

    @admin.display(description="record")
    def record_withheld(self, obj: DeadLetter) -> str:
        return (
            "Withheld: the payload, the raw record and its key and headers are shown to users "
            "with the permission to requeue dead letters (dlq.requeue_deadletter), as the export is."
        )

    # -- permissions ------------------------------------------------------------------
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: DeadLetter | None = None) -> bool:
        return False  # discard instead; `manage.py dlq purge` removes old closed entries

    def has_requeue_permission(self, request: HttpRequest, obj: DeadLetter | None = None) -> bool:
        return request.user.has_perm("dlq.requeue_deadletter")

    # -- reading entries --------------------------------------------------------------
    def get_queryset(self, request: HttpRequest) -> QuerySet:
        """The JSON columns are left unread: Django would json.loads them as each row
        loads, and a stored value nested thousands of levels deep would fail the page."""
        return super().get_queryset(request).defer(*JSON_FIELDS)

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> DeadLetter | None:
        """The entry, with its JSON columns as the text Postgres holds (`json_text`),
        for dlq.display to lay out within bounds."""
        entry = super().get_object(request, object_id, from_field)
        if entry is not None:
            texts = (
                DeadLetter.objects.filter(pk=entry.pk)
                .values_list(*(Cast(name, output_field=TextField()) for name in JSON_FIELDS))
                .first()
            )
            entry.json_text = dict(zip(JSON_FIELDS, texts or (None,) * len(JSON_FIELDS), strict=True))
        return entry

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

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        if request.method == "POST":
            raise PermissionDenied("dead letters change only through requeue, resolve or discard")
        entry = self.get_object(request, object_id)
        is_open = entry is not None and entry.status == DeadLetter.Status.OPEN
        context = {
            "title": "Dead letter",
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            "show_delete": False,
            "is_open": is_open,
            "can_requeue": is_open and self.has_requeue_permission(request),
            "can_close": is_open and self.has_change_permission(request, entry),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, context)

    # -- actions ----------------------------------------------------------------------
    @admin.action(permissions=["requeue"], description="Requeue selected dead letters")
    def requeue_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
        """Oldest first, paced at DLQ_REQUEUE_RATE_PER_SECOND, for at most
        DLQ_ADMIN_REQUEUE_SECONDS: the request must end before the web worker's
        timeout kills it. What is left is named, with the command that finishes it."""
        started = timezone.now()
        ids = list(queryset.order_by("created_at", "pk").values_list("pk", flat=True))
        report = requeue_many(ids, by=request.user.get_username(), seconds=settings.DLQ_ADMIN_REQUEUE_SECONDS)
        for entry in report.requeued:
            run = entry.requeue_history[-1].get("saga_run")
            self.log_change(request, entry, f"Requeued (saga run {run})." if run else "Requeued.")
        if report.requeued:
            self.message_user(request, f"Requeued {len(report.requeued)} dead letter(s).", messages.SUCCESS)
        for _, why in report.refused:
            self.message_user(request, f"Not requeued: {why}", messages.WARNING)
        if report.unavailable:
            self.message_user(
                request,
                f"Stopped: {report.unavailable}. Requeued {len(report.requeued)} of {len(ids)}; the "
                f"{len(report.left)} left are OPEN, as they were: select them again once it is back.",
                messages.ERROR,
            )
        elif report.left:
            command = self._finishing_command(request, report.left, started)
            self.message_user(
                request,
                f"Stopped after {settings.DLQ_ADMIN_REQUEUE_SECONDS:g} s (DLQ_ADMIN_REQUEUE_SECONDS), so the page "
                f"answers before the web worker's timeout: requeued {len(report.requeued)} of {len(ids)}, "
                f"{len(report.left)} left. Requeue them with: {command}",
                messages.WARNING,
            )
        return self._back(request)

    def _finishing_command(self, request: HttpRequest, left: list[int], started: datetime) -> str:
        """The `manage.py dlq requeue` that requeues the entries left: by id when
        they are few, else by the list's filters from the first one left on
        (entries since requeued are no longer OPEN, so the command skips them)."""
        by_id = "manage.py dlq requeue " + " ".join(str(pk) for pk in left)
        if len(left) <= IDS_IN_COMMAND or request.POST.get("select_across") != "1":
            return by_id
        options = command_filters(request.GET)
        first = DeadLetter.objects.filter(pk=left[0]).values_list("created_at", flat=True).first()
        if options is None or first is None:
            return by_id
        filters, since, until = options
        since = max(since, first) if since else first
        until = min(until, started) if until else started
        args = [*filters, "--since", since.isoformat(), "--until", until.isoformat()]
        return "manage.py dlq requeue " + " ".join(shlex.quote(arg) for arg in args)

    @admin.action(permissions=["view"], description="Export selected dead letters as CSV")
    def export_csv(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseBase:
        return self._export(request, queryset, "csv")

    @admin.action(permissions=["view"], description="Export selected dead letters as JSON lines")
    def export_jsonl(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseBase:
        return self._export(request, queryset, "jsonl")

    def _export(self, request: HttpRequest, queryset: QuerySet, kind: str) -> HttpResponseBase:
        """A file of the selection, streamed (select all may mean thousands). The
        records themselves go only to users who may requeue them (dlq/export.py)."""
        with_record = self.has_requeue_permission(request)
        rows = export.rows(queryset, with_record=with_record)
        if kind == "csv":
            body, content_type = export.csv_lines(rows, export.fields(with_record=with_record)), "text/csv"
        else:
            body, content_type = export.jsonl(rows), "application/x-ndjson"
        response = StreamingHttpResponse(body, content_type=f"{content_type}; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="dead-letters-{stamp}.{kind}"'
        log.info(
            "dead letters exported as %s by %s (%s)",
            kind,
            request.user.get_username(),
            "with records" if with_record else "without records",
        )
        return response

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
