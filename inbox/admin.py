"""The inbox in the admin's index: "Conversations" leads to the inbox's own list page
(inbox.views), which shows more than a change list could (the window, who holds it) and
refreshes itself. A conversation is a lead: it is edited on the lead's admin page."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from inbox.models import Conversation


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return HttpResponseRedirect(reverse("inbox:list"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
