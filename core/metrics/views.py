"""/metrics: Prometheus exposition (core.metrics.serving), for a scraper holding
METRICS_TOKEN or a logged-in staff user holding settings.METRICS_PERMISSION only: it
names businesses, breakers and queues, which are nobody else's business, and every
scrape costs reads. Staff status alone is not enough: a support agent with a login
to read dead letters has no reason to see every business's volumes."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from core.metrics.serving import exposition


def metrics_allowed(request: HttpRequest) -> bool:
    """A bearer token equal to METRICS_TOKEN (compared in constant time), or a session
    of an active staff user with METRICS_PERMISSION."""
    token = settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and given.strip():
        return hmac.compare_digest(given.strip().encode(), token.encode())
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff and user.has_perm(settings.METRICS_PERMISSION))


@require_GET
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and "Authorization" not in request.headers:
            return HttpResponse(
                f"metrics are for staff users with the permission {settings.METRICS_PERMISSION} "
                "and the Prometheus scraper\n",
                status=403,
                content_type="text/plain",
            )
        response = HttpResponse(
            "metrics need Authorization: Bearer <METRICS_TOKEN> or a staff login with the permission to read them\n",
            status=401,
            content_type="text/plain",
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body, content_type = exposition()
    return HttpResponse(body, content_type=content_type)
