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
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.apps import apps
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.admin.views.main import IGNORED_PARAMS
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import SafeString
from django.utils.timesince import timesince

from dlq import display, export
from dlq.models import DeadLetter, EntryNotOpen
from dlq.requeue import requeue_many

log = logging.getLogger(__name__)

# The JSON columns, read as text on an entry's page (see dlq/display.py) and not
# at all on the list.
JSON_FIELDS = ("payload", "saga_state", "kafka_headers", "requeue_history")
# Characters of an id (business, processing_id) and of an error's first line shown on the list.
CUT_ID = 24
CUT_ERROR = 70
# Ids have no spaces to wrap at: they wrap anywhere. An error wraps between words.
ID_STYLE = "display: inline-block; max-width: 10em; overflow-wrap: anywhere"
ERROR_STYLE = "display: inline-block; min-width: 12em; max-width: 30em; overflow-wrap: break-word"
# Left-over entries up to this many are named by id in the command the admin suggests.
IDS_IN_COMMAND = 100
# The changelist's filters that `manage.py dlq requeue` has an option for.
FILTER_OPTIONS = {
    f"{field}{lookup}": option
    for field, option in (("stage", "--stage"), ("reason", "--reason"), ("business_id", "--business"))
    for lookup in ("", "__exact")
}


class CloseForm(forms.Form):
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 80}), strip=True)


CLOSINGS = {
    # action name: (model method, past tense, what the note is called)
    "resolve_selected": ("resolve", "Resolved", "note"),
    "discard_selected": ("discard", "Discarded", "reason"),
}


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
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
    readonly_fields = flatten_fieldsets(fieldsets)

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
        if report.left:
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

    # -- how an entry reads -----------------------------------------------------------
    @admin.display(description="requeues", ordering="requeue_count")
    def requeues(self, obj: DeadLetter) -> int:
        return obj.requeue_count

    @admin.display(description="age", ordering="-created_at")
    def age(self, obj: DeadLetter) -> str:
        """How long ago, at a glance; the time itself, to the second, in the tooltip."""
        return format_html(
            '<span title="{}" style="white-space: nowrap">{}</span>',
            date_format(timezone.localtime(obj.created_at), "DATETIME_FORMAT"),
            timesince(obj.created_at, depth=1),
        )

    @admin.display(description="business", ordering="business_id")
    def business(self, obj: DeadLetter) -> str:
        return _cut(obj.business_id, CUT_ID, ID_STYLE)

    @admin.display(description="message", ordering="processing_id")
    def message(self, obj: DeadLetter) -> str:
        return _cut(obj.processing_id, CUT_ID, ID_STYLE)

    @admin.display(description="error")
    def short_error(self, obj: DeadLetter) -> str:
        return _cut(obj.error_message.splitlines()[0] if obj.error_message else "", CUT_ERROR, ERROR_STYLE)

    @admin.display(description="error message")
    def error(self, obj: DeadLetter) -> str:
        return display.text_block(obj.error_message) if obj.error_message else "-"

    @admin.display(description="traceback")
    def traceback_text(self, obj: DeadLetter) -> str:
        if not obj.traceback:
            return "- (none: the record was refused by validation)"
        return display.text_block(obj.traceback, tail=True)

    @admin.display(description="payload")
    def payload_json(self, obj: DeadLetter) -> str:
        return display.json_block(_json_text(obj, "payload"))

    @admin.display(description="raw record")
    def raw_record(self, obj: DeadLetter) -> str:
        return display.bytes_block(obj.raw_value)

    @admin.display(description="inbox message")
    def inbox_message(self, obj: DeadLetter) -> str:
        """A link to the message's row in the model settings.DLQ_SOURCE_MODEL names ("app_label.Model",
        with processing_id and status fields), as AUTH_USER_MODEL names a model: this app imports none."""
        source = getattr(settings, "DLQ_SOURCE_MODEL", None)
        if not source or not obj.processing_id:
            return "-"
        model = apps.get_model(source)
        row = model.objects.filter(processing_id=obj.processing_id).only("pk", "status").first()
        if row is None:
            return "-"
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[row.pk])
        return format_html('<a href="{}">{}</a> ({})', url, obj.processing_id, row.status)

    @admin.display(description="steps at failure")
    def saga_steps(self, obj: DeadLetter) -> str:
        def table(state: Any) -> SafeString | str | None:
            if not isinstance(state, dict):
                return None if state else "-"
            steps = display.rows_of(state.get("steps") or [])
            if steps is None:
                return None
            if not steps:
                return "-"
            cell = display.table_cell
            rows = format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td><strong>{}</strong></td><td>{}</td><td>{}</td></tr>",
                (
                    (
                        cell(s.get("order")),
                        cell(s.get("action")),
                        cell(s.get("status")),
                        cell(s.get("attempts")),
                        cell(s.get("error") or s.get("compensation_error") or ""),
                    )
                    for s in steps
                ),
            )
            return format_html(
                '<p>handler: {}</p><table class="saga-steps"><thead><tr><th>#</th><th>action</th><th>state</th>'
                "<th>attempts</th><th>error</th></tr></thead><tbody>{}</tbody></table>",
                cell(state.get("handler") or "-"),
                rows,
            )

        return display.table_or_block(_json_text(obj, "saga_state"), table)

    @admin.display(description="topic [partition] @ offset")
    def kafka_coordinates(self, obj: DeadLetter) -> str:
        if not obj.kafka_topic:
            return "-"
        return f"{obj.kafka_topic} [{obj.kafka_partition}] @ {obj.kafka_offset}"

    @admin.display(description="key")
    def record_key(self, obj: DeadLetter) -> str:
        if obj.kafka_key is None:
            return "-"
        key = bytes(obj.kafka_key)
        text = display.visible(key[:1024].decode("utf-8", errors="backslashreplace"))
        return text + (f"… ({len(key):,} bytes)" if len(key) > 1024 else "")

    @admin.display(description="headers")
    def record_headers(self, obj: DeadLetter) -> str:
        return display.json_block(_json_text(obj, "kafka_headers"))

    @admin.display(description="requeue history")
    def requeue_log(self, obj: DeadLetter) -> str:
        def table(history: Any) -> SafeString | str | None:
            if not history:
                return "never requeued"
            rows = display.rows_of(history)
            if rows is None:
                return None
            cell = display.table_cell
            body = format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                ((cell(h.get("at")), cell(h.get("by")), cell(h.get("saga_run") or "-")) for h in rows),
            )
            return format_html(
                '<table class="requeue-history"><thead><tr><th>when</th><th>by</th>'
                "<th>saga run</th></tr></thead><tbody>{}</tbody></table>",
                body,
            )

        return display.table_or_block(_json_text(obj, "requeue_history"), table)

    @admin.display(description="same message")
    def related_entries(self, obj: DeadLetter) -> str:
        """The entry this one follows (a requeue that failed again) and the ones after it."""
        if not obj.processing_id:
            return "-"
        others = DeadLetter.objects.filter(processing_id=obj.processing_id).exclude(pk=obj.pk).count()
        if not others:
            return "no other entry"
        url = reverse("admin:dlq_deadletter_changelist") + "?" + urlencode({"processing_id": obj.processing_id})
        return format_html(
            '<a href="{}">{} other entr{} for {}</a>', url, others, "y" if others == 1 else "ies", obj.processing_id
        )


def _cut(text: str, limit: int, style: str) -> str:
    """A list cell: at most `limit` characters, wrapping anywhere (an id or a URL has no
    spaces to wrap at), the whole text in the tooltip."""
    if not text:
        return "-"
    shown = text[:limit] + ("…" if len(text) > limit else "")
    return format_html('<span title="{}" style="{}">{}</span>', display.visible(text[:1000]), style, shown)


def _json_text(obj: DeadLetter, name: str) -> str | None:
    """A JSON column as text: as read by get_object, or serialised from a loaded entry."""
    texts = getattr(obj, "json_text", None)
    if texts is not None:
        return texts[name]
    import json

    value = getattr(obj, name)
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def command_filters(params: QueryDict) -> tuple[list[str], datetime | None, datetime | None] | None:
    """The `manage.py dlq requeue` options that select what the changelist's
    filters select (as options, and the created_at bounds), or None when one of
    them has no such option."""
    options: list[str] = []
    since: datetime | None = None
    until: datetime | None = None
    parts = {}
    for name, value in params.items():
        if not isinstance(value, str):
            return None  # a parameter with no value at all: no option says that
        if name != "q" and (name in IGNORED_PARAMS or name == "p"):
            continue  # ordering, page, facets, popup: not a filter
        if name in FILTER_OPTIONS:
            options += [FILTER_OPTIONS[name], value]
        elif name in ("status", "status__exact"):
            if value != DeadLetter.Status.OPEN:
                return None  # nothing there to requeue; the ids will say so
        elif name == "q":
            if not value or any(c.isspace() or c in "\"'" for c in value):
                return None  # several terms: the admin ANDs them, --search takes one
            options += ["--search", value]
        elif name in ("created_at__gte", "created_at__lt"):
            moment = _moment(value)
            if moment is None:
                return None
            if name.endswith("gte"):
                since = moment
            else:
                until = moment
        elif name in ("created_at__year", "created_at__month", "created_at__day"):
            if not value.isdigit():
                return None
            parts[name.rsplit("__", 1)[1]] = int(value)
        else:
            return None
    if parts:
        try:
            start = datetime(parts["year"], parts.get("month", 1), parts.get("day", 1), tzinfo=UTC)
        except (KeyError, ValueError):
            return None
        if "day" in parts:
            end = start + timedelta(days=1)
        elif "month" in parts:
            end = (start + timedelta(days=32)).replace(day=1)
        else:
            end = start.replace(year=start.year + 1)
        since = max(since, start) if since else start
        until = min(until, end) if until else end
    return options, since, until


def _moment(value: str) -> datetime | None:
    """A date or date-time as the admin's date filter writes it (UTC unless it says otherwise)."""
    try:
        parsed = parse_datetime(value)
        if parsed is None:
            day = parse_date(value)
            parsed = datetime(day.year, day.month, day.day, tzinfo=UTC) if day else None
    except ValueError:
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
