"""GET/POST /webhooks/whatsapp/: Meta's subscription handshake and its signed deliveries.

The answer tells Meta whether to deliver again, so it follows what was kept: 200 only once
the delivery is committed; 503 when the database is away (Meta redelivers, the wamid makes
the redelivery harmless); 403 for a bad signature and 400 for an oversized body or one that
is not UTF-8 JSON, both with nothing stored. A signed JSON delivery is never refused for what
it holds: an item we cannot read is kept as UNREADABLE and the others run. Neither the app
secret, the verify token nor what the customer wrote appears in a log line or a response.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from core.metrics import counters
from whatsapp.edge.webhook.payload import MalformedDelivery, parse_delivery
from whatsapp.edge.webhook.signature import signature_valid, token_matches
from whatsapp.edge.webhook.store import store_delivery

log = logging.getLogger("whatsapp.webhook")

SIGNATURE_HEADER = "X-Hub-Signature-256"


def _plain(text: str, status: int) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")


def _refused(kind: str, text: str, status: int) -> HttpResponse:
    counters.webhook_refused(kind)
    return _plain(text, status)


@csrf_exempt
@require_http_methods(["GET", "POST"])
def whatsapp_webhook(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _verify(request)
    return _receive(request)


def _verify(request: HttpRequest) -> HttpResponse:
    """Meta's handshake when the callback URL is set: echo hub.challenge if the token is ours."""
    expected = settings.WHATSAPP_VERIFY_TOKEN
    if not expected:
        log.error("webhook: verification refused: WHATSAPP_VERIFY_TOKEN is not set")
        return _refused("refused_token", "verification is not configured", 403)
    mode = request.GET.get("hub.mode")
    if mode != "subscribe" or not token_matches(request.GET.get("hub.verify_token"), expected):
        log.warning(
            "webhook: verification refused (mode %r, token %s)",
            (mode or "")[:20],
            "given" if request.GET.get("hub.verify_token") else "missing",
        )
        return _refused("refused_token", "verification refused", 403)
    log.info("webhook: verification handshake answered")
    return _plain(request.GET.get("hub.challenge", ""), 200)


def _receive(request: HttpRequest) -> HttpResponse:
    secret = settings.WHATSAPP_APP_SECRET
    if not secret:
        # Never accept what cannot be checked; 503 so Meta keeps the deliveries until it is set.
        log.error("webhook: delivery refused: WHATSAPP_APP_SECRET is not set, so no signature can be checked")
        return _refused("unavailable", "webhook not configured", 503)
    limit = settings.WHATSAPP_WEBHOOK_MAX_BYTES
    declared = request.META.get("CONTENT_LENGTH") or ""
    if declared.isdigit() and int(declared) > limit:
        log.warning("webhook: delivery refused: %s bytes declared, over the %d-byte limit", declared, limit)
        return _refused("oversized", "body too large", 400)
    body = request.body
    if len(body) > limit:
        log.warning("webhook: delivery refused: %d bytes, over the %d-byte limit", len(body), limit)
        return _refused("oversized", "body too large", 400)
    if not signature_valid(body, request.headers.get(SIGNATURE_HEADER), secret):
        log.warning(
            "webhook: delivery refused: %s %s (%d bytes)",
            SIGNATURE_HEADER,
            "does not match" if request.headers.get(SIGNATURE_HEADER) else "missing",
            len(body),
        )
        return _refused("refused_signature", "invalid signature", 403)
    try:
        delivery = parse_delivery(body)
    except MalformedDelivery as exc:
        log.warning("webhook: signed delivery refused as malformed (%d bytes): %s", len(body), exc)
        return _refused("malformed", f"malformed delivery: {exc}", 400)
    try:
        result = store_delivery(body, delivery)
    except (OperationalError, InterfaceError) as exc:
        log.warning(
            "webhook: cannot store delivery (%s: %s); answering 503 so Meta delivers it again",
            type(exc).__name__,
            str(exc).splitlines()[0][:200] if str(exc) else "",
        )
        return _refused("unavailable", "temporarily unavailable", 503)
    if result.replay_of is not None:
        log.info("webhook: delivery identical to delivery %d, stored then; nothing stored again", result.replay_of)
        return _plain("OK", 200)
    log.info(
        "webhook: delivery %d stored: %d new, %d duplicate, %d unroutable, %d unreadable, %d system message(s), "
        "%d too old, %d status(es), %d change(s)",
        result.delivery_id,
        result.new,
        result.duplicates,
        result.unroutable,
        result.unreadable,
        result.system,
        result.too_old,
        result.statuses,
        sum(result.changes.values()),
    )
    return _plain("OK", 200)
