"""Pieces the apps' admin modules share: read-only admins for records the
pipeline writes, and readable renderings of JSON and tracebacks."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

PRE_STYLE = "white-space: pre-wrap; word-break: break-word; max-height: 40em; overflow: auto; margin: 0"


def pre(text: str) -> SafeString:
    """Text as it was, escaped, line breaks kept."""
    return format_html('<pre style="{}">{}</pre>', PRE_STYLE, text)


def pre_json(value: Any) -> SafeString | str:
    """JSON indented for reading; '-' when there is none."""
    if value in (None, "", [], {}):
        return "-"
    return pre(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str))


class ReadOnlyMixin:
    """For what the pipeline writes (its keys and states are its own): staff may
    look, nobody adds, changes or deletes through the admin."""

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Every field read-only, so no form field (and no widget) is built for any.
        # A mixin: the ModelAdmin or inline it is mixed into has exclude, model and the super
        # method, which mypy cannot see from here.
        declared = list(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        excluded = set(self.exclude or ())  # type: ignore[attr-defined]
        return declared + [
            f.name
            for f in self.model._meta.fields  # type: ignore[attr-defined]
            if f.name not in excluded and f.name not in declared
        ]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyModelAdmin(ReadOnlyMixin, admin.ModelAdmin):
    pass


class ReadOnlyTabularInline(ReadOnlyMixin, admin.TabularInline):
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False
