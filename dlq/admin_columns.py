"""How a dead letter reads in the admin: the list's columns and the entry page's fields.

Every value is bounded and escaped (dlq.display), so any entry's page opens, whatever the
record that failed held. A mixin, so dlq.admin keeps only what the admin does (permissions,
views, actions) and this module only what it shows.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from django.apps import apps
from django.conf import settings
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.timesince import timesince

from dlq import display
from dlq.models import DeadLetter

# Characters of an id (business, processing_id) and of an error's first line shown on the list.
CUT_ID = 24
CUT_ERROR = 70
# Ids have no spaces to wrap at: they wrap anywhere. An error wraps between words.
ID_STYLE = "display: inline-block; max-width: 10em; overflow-wrap: anywhere"
ERROR_STYLE = "display: inline-block; min-width: 12em; max-width: 30em; overflow-wrap: break-word"


class DeadLetterColumns:
    """The display methods of DeadLetterAdmin's list_display and readonly fields."""

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
            cell = display.table_cell
            # Why no reply went, when the app that wrote the entry says (e.g. the customer opted out).
            reply = state.get("reply")
            why = (
                format_html("<p>reply: <strong>{}</strong> ({})</p>", cell(reply.get("status")), cell(reply.get("why")))
                if isinstance(reply, dict)
                else ""
            )
            if not steps:
                return why or "-"
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
                '<p>handler: {}</p>{}<table class="saga-steps"><thead><tr><th>#</th><th>action</th><th>state</th>'
                "<th>attempts</th><th>error</th></tr></thead><tbody>{}</tbody></table>",
                cell(state.get("handler") or "-"),
                why,
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
    value = getattr(obj, name)
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)
