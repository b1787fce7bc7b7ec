"""The live overview in the admin, for staff who may view the inbox.

The page is served once; its script then asks `data` for the figures every
POLL_SECONDS and redraws. Each poll is one short request (a few aggregate queries
over the last hour, the scrape-time gauges from /metrics' cache), so a gunicorn
sync worker is busy for milliseconds per poll and free in between. Server-sent
events or a long poll would instead hold a sync worker for as long as the page is
open: with `make up`'s two workers, two open tabs would leave the admin, the
webhook and /metrics nobody to answer them. Polling every 2.5 s keeps the page
within the 5 s an operator expects without that cost.
"""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse

from whatsapp.ops.overview import figures

POLL_SECONDS = 2.5
PERMISSION = "whatsapp.view_processedmessage"


def _allowed(request: HttpRequest) -> None:
    """admin_view has already sent anyone not logged in as active staff to the login page."""
    if not request.user.has_perm(PERMISSION):
        raise PermissionDenied("The overview needs the permission to view inbox messages.")


def _page(request: HttpRequest) -> HttpResponse:
    _allowed(request)
    context = {
        **admin.site.each_context(request),
        "title": "Live overview",
        "poll_ms": int(POLL_SECONDS * 1000),
        "minutes": figures.MINUTES,
        "latency_minutes": figures.LATENCY_MINUTES,
    }
    return TemplateResponse(request, "admin/whatsapp/overview.html", context)


def _data(request: HttpRequest) -> JsonResponse:
    _allowed(request)
    return JsonResponse(figures.read())


# admin_view: the login redirect for anyone not active staff, never_cache, CSRF protection.
page = admin.site.admin_view(_page)
data = admin.site.admin_view(_data)
