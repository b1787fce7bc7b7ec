"""The inbox's pages, in the admin (its login, its look), for staff with inbox.view_conversation.

Each page is served once; its script (static/inbox/inbox.js) then asks the page's JSON
endpoint every POLL_SECONDS and redraws, so something new shows within 3 s. Each poll is
one short request of a few bounded, indexed queries (inbox.conversations): a gunicorn sync
worker is busy for milliseconds per poll, where server-sent events or a long poll would
hold one for as long as a page is open (the overview's reasoning, whatsapp.ops.overview.views).

The forms (take over, hand back, reply) are POSTs with Django's CSRF token; each needs
inbox.answer_conversation as well, and answers with a message and a redirect to the thread.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_POST

from inbox import agents, conversations
from inbox.models import ANSWER_PERMISSION, VIEW_PERMISSION
from leads.models import Business, Lead

POLL_SECONDS = 2.5


def _allowed(request: HttpRequest, permission: str = VIEW_PERMISSION) -> None:
    """admin_view has already sent anyone not logged in as active staff to the login page."""
    if not request.user.has_perm(permission):
        raise PermissionDenied(f"This needs the permission {permission}.")


def _lead(business_id: str, lead_id: str) -> Lead:
    lead = Lead.objects.by_id(get_object_or_404(Business, business_id=business_id), lead_id)
    if lead is None:
        raise Http404("No such conversation.")
    return lead


def _list_page(request: HttpRequest) -> HttpResponse:
    _allowed(request)
    filters = conversations.Filters.from_query(request.GET)
    context = {
        **admin.site.each_context(request),
        "title": "Conversations",
        "poll_ms": int(POLL_SECONDS * 1000),
        "filters": filters,
        "businesses": Business.objects.order_by("business_id").values_list("business_id", "display_name"),
        "data_url": reverse("inbox:list-data") + ("?" + request.GET.urlencode() if request.GET else ""),
    }
    return TemplateResponse(request, "inbox/list.html", context)


def _list_data(request: HttpRequest) -> JsonResponse:
    _allowed(request)
    return JsonResponse(conversations.list_data(conversations.Filters.from_query(request.GET)))


def _thread_page(request: HttpRequest, business_id: str, lead_id: str) -> HttpResponse:
    _allowed(request)
    lead = _lead(business_id, lead_id)
    context = {
        **admin.site.each_context(request),
        "title": f"Conversation with {lead.display_name}",
        "poll_ms": int(POLL_SECONDS * 1000),
        "lead": lead,
        "state": conversations.state(lead),
        "may_answer": request.user.has_perm(ANSWER_PERMISSION),
        "max_reply_chars": agents.MAX_REPLY_CHARS,
        "data_url": reverse("inbox:thread-data", args=[business_id, lead.lead_id]),
    }
    return TemplateResponse(request, "inbox/thread.html", context)


def _thread_data(request: HttpRequest, business_id: str, lead_id: str) -> JsonResponse:
    _allowed(request)
    return JsonResponse(conversations.thread(_lead(business_id, lead_id)))


def _act(request: HttpRequest, business_id: str, lead_id: str) -> HttpResponse:
    """One of the forms: `action` is take_over, hand_back or reply (with `text`)."""
    _allowed(request)
    _allowed(request, ANSWER_PERMISSION)
    lead = _lead(business_id, lead_id)
    action = request.POST.get("action", "")
    try:
        if action == "take_over":
            agents.take_over(lead, request.user)
            messages.success(request, "You hold this conversation: the bot sends no reply until you hand it back.")
        elif action == "hand_back":
            agents.hand_back(lead, request.user)
            messages.success(request, "Handed back: the bot answers this customer again.")
        elif action == "reply":
            agents.reply(lead, request.user, request.POST.get("text", ""))
            messages.success(request, "Reply queued: its ticks show below once WhatsApp reports them.")
        else:
            messages.error(request, f"Unknown action {action[:40]!r}.")
    except agents.NotAllowed as refused:
        messages.error(request, str(refused))
    return HttpResponseRedirect(reverse("inbox:thread", args=[business_id, lead.lead_id]))


# admin_view: the login redirect for anyone not active staff, never_cache, CSRF protection.
list_page = admin.site.admin_view(_list_page)
list_data = admin.site.admin_view(_list_data)
thread_page = admin.site.admin_view(_thread_page)
thread_data = admin.site.admin_view(_thread_data)
act = admin.site.admin_view(require_POST(_act))
