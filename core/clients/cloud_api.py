"""The WhatsApp Cloud API (Meta Graph API): send one text or template message, list a
WhatsApp Business Account's templates, and classify what came back.

Meta says to build error handling on the Graph error `code`, not on the HTTP status nor on
the title inside `message` (titles are being deprecated), so the code decides first and the
HTTP status only decides when the body carries no code. Every failure becomes one of the
action errors the saga understands:

- CloudApiRetryable: throttling (4, 80007, 130429, 131056), Meta's own trouble (1, 2, 131016,
  HTTP 5xx), and transport failures where the request certainly never arrived.
- CloudApiOutcomeUnknown (a CloudApiRetryable): the request may have reached Meta (read
  timeout, connection dropped mid-exchange, a 2xx without a wamid). The caller must not
  blindly send again: the customer could get the reply twice.
- CloudApiPermanent: the request itself is wrong or not allowed (131047 outside the 24-hour
  window, 131026 undeliverable, 131051 unsupported type, 131008/131009 bad parameters, other 4xx).
- CloudApiTemplateError (a CloudApiPermanent): the template message itself is wrong (132000
  parameter count, 132001 no such template in that language, 132005 text too long, 132007
  policy, 132012 parameter format, 132015 paused, 132016 disabled): fixing the template, not a
  retry, is what helps; the saga dead-letters it as `template_error`.
- CloudApiMarketingStopped (a CloudApiPermanent): 131050, the customer stopped marketing
  messages from this business. Not a fault: the send records it on the lead and skips the
  reply (SKIPPED_OPTED_OUT), never retried, never dead-lettered (whatsapp.send.reply).
- CloudApiAuthError (a CloudApiPermanent): the token or its permissions were refused
  (0, 10, 190, 200-299). Retrying cannot help and every other send is failing too, so it is
  logged at CRITICAL for a human.

The access token is a bearer secret. It is only ever put in the Authorization header; any
text taken from a response is passed through `redact` before it reaches a log line, an
exception message (and so a saga row or a dead letter) or the database. Failures of the
call itself name no URL (WHATSAPP_GRAPH_BASE_URL may not carry credentials, and the
phone-number id is digits only) and chain no exception of the HTTP library.

Each call is bounded (core.clients.http): a connect timeout, a read timeout, a total
deadline (WHATSAPP_DEADLINE_SECONDS) for the whole exchange, and at most
WHATSAPP_MAX_RESPONSE_BYTES of the answer read. Passing the deadline after the request
went out is an unknown outcome, like a read timeout.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypedDict
from urllib.parse import urlencode

from django.conf import settings

from core.clients import http
from core.errors import ActionError, PermanentActionError, RetryableActionError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://graph.facebook.com"
DEFAULT_VERSION = "v21.0"
DEFAULT_CONNECT_TIMEOUT = 3.0
DEFAULT_READ_TIMEOUT = 10.0
DEFAULT_DEADLINE_SECONDS = 15.0
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
# Meta allows about one message every 6 s from one business number to one customer.
PAIR_RATE_BACKOFF_SECONDS = 6.0
MAX_RETRY_AFTER_SECONDS = 3600.0
MAX_TEXT_LENGTH = 4096  # Cloud API limit for text.body
MAX_TITLE_LENGTH = 300

RETRYABLE_CODES = frozenset({1, 2, 4, 80007, 130429, 131016, 131056})
AUTH_CODES = frozenset({0, 10, 190, *range(200, 300)})
PAIR_RATE_LIMIT_CODE = 131056
# Permanent whatever the HTTP status says; any other code is permanent unless on a 5xx or 429.
# 131062: a BSUID recipient is not supported for this message (some authentication templates).
PERMANENT_CODES = frozenset({131047, 131026, 131051, 131008, 131009, 131062})
# The template message's own faults (Meta's error codes reference): permanent, told apart.
TEMPLATE_CODES = frozenset({132000, 132001, 132005, 132007, 132012, 132015, 132016})
TEMPLATE_PAUSED, TEMPLATE_DISABLED = 132015, 132016
# The customer stopped marketing messages from this business (a MARKETING template refused).
MARKETING_STOPPED_CODE = 131050
TEMPLATES_PAGE_SIZE = 100
# Pages of a WABA's templates read at most by one listing (100 a page): a loop guard, not a limit met in practice.
MAX_TEMPLATE_PAGES = 100
# A business-scoped user id (US.1349…): sent as `recipient`, a number as `to` (Meta: when both
# are given `to` wins, so exactly one is sent).
_BSUID = re.compile(r"^[A-Z]{2}\.[A-Za-z0-9.]{1,140}$")

REDACTED = "[redacted]"
# Meta user/system/page tokens start with "EAA"; hide any that a response echoes, ours or not.
_TOKEN_PATTERN = re.compile(r"EAA[A-Za-z0-9_\-]{16,}")
_TITLE_PREFIX = re.compile(r"^\(#\d+\)\s*")


class CloudApiError(ActionError):
    """What every Cloud API failure carries, whichever way it is classified."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        title: str = "",
        http_status: int | None = None,
        fbtrace_id: str = "",
        details: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.title = title
        self.http_status = http_status
        self.fbtrace_id = fbtrace_id
        self.details = details


class CloudApiRetryable(CloudApiError, RetryableActionError):
    """Try again later; retry_after, when set, is the least wait that makes sense."""

    def __init__(self, message: str, *, retry_after: float | None = None, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.retry_after = retry_after


class CloudApiOutcomeUnknown(CloudApiRetryable):
    """The request may have been accepted: retryable in principle, but not by re-sending blindly."""


class CloudApiPermanent(CloudApiError, PermanentActionError):
    """Sending the same request again cannot succeed."""


class CloudApiTemplateError(CloudApiPermanent):
    """Meta refused the template message (TEMPLATE_CODES): dead-lettered as template_error, so
    an operator fixes the template (approve it, add the language, match its parameters) and
    requeues."""

    dead_letter_reason = "template_error"


class CloudApiMarketingStopped(CloudApiPermanent):
    """131050: the customer chose to stop marketing messages; the caller records it and skips."""


class CloudApiAuthError(CloudApiPermanent):
    """The access token, or its permissions, were refused."""


class _ErrorFields(TypedDict):
    """CloudApiError's keyword arguments, as classify() gathers them."""

    code: int | None
    title: str
    http_status: int | None
    fbtrace_id: str
    details: str


@dataclass(frozen=True)
class SendResult:
    wamid: str
    wa_id: str
    http_status: int


def send_text(
    *,
    phone_number_id: str,
    to: str,
    body: str,
    context_message_id: str | None = None,
    biz_opaque_callback_data: str | None = None,
) -> SendResult:
    """Send a free-form text message. Returns the wamid Meta assigned; raises a CloudApiError otherwise.

    Settings are read per call so overrides (and tests) apply without a restart.
    """
    token = getattr(settings, "WHATSAPP_ACCESS_TOKEN", None)
    if not token:
        log.error("WhatsApp reply not sent: WHATSAPP_ACCESS_TOKEN is not set")
        raise CloudApiPermanent("WHATSAPP_ACCESS_TOKEN is not set", title="WHATSAPP_ACCESS_TOKEN is not set")
    if not phone_number_id:
        raise CloudApiPermanent("business has no WhatsApp phone_number_id", title="no phone_number_id")
    if not phone_number_id.isascii() or not phone_number_id.isdigit():
        # It goes into the URL's path: anything but digits could point the call elsewhere.
        raise CloudApiPermanent(
            "the business's WhatsApp phone_number_id is not digits only", title="invalid phone_number_id"
        )
    if not to:
        raise CloudApiPermanent(
            "recipient is empty: the customer has neither a number nor a BSUID", title="no recipient"
        )
    if not body or not body.strip():
        raise CloudApiPermanent("reply text is empty", title="empty text")
    if len(body) > MAX_TEXT_LENGTH:
        raise CloudApiPermanent(
            f"reply text is {len(body)} characters, the limit is {MAX_TEXT_LENGTH}", title="text too long"
        )

    payload = build_payload(
        to=to, body=body, context_message_id=context_message_id, biz_opaque_callback_data=biz_opaque_callback_data
    )
    return _post_message(phone_number_id, payload, token)


def send_template(
    *,
    phone_number_id: str,
    to: str,
    name: str,
    language: str,
    components: list[dict[str, Any]],
    biz_opaque_callback_data: str | None = None,
) -> SendResult:
    """Send an approved message template (the only kind of message Meta delivers once the
    customer's 24-hour window has closed). Returns the wamid; raises a CloudApiError, a
    CloudApiTemplateError when Meta refuses the template itself."""
    token = _token()
    _check_id(phone_number_id, "phone_number_id")
    if not to:
        raise CloudApiPermanent(
            "recipient is empty: the customer has neither a number nor a BSUID", title="no recipient"
        )
    if not name or not language:
        raise CloudApiPermanent("a template message needs a template name and language", title="no template")
    payload: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        **({"recipient": to} if _BSUID.match(to) else {"to": to}),
        "type": "template",
        "template": {
            "name": name,
            "language": {"code": language},
            **({"components": components} if components else {}),
        },
    }
    if biz_opaque_callback_data:
        payload["biz_opaque_callback_data"] = biz_opaque_callback_data
    return _post_message(phone_number_id, payload, token)


def _post_message(phone_number_id: str, payload: dict[str, Any], token: str) -> SendResult:
    url = messages_url(phone_number_id)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    limits = _limits()
    failure: CloudApiError | None = None
    try:
        answer = http.post(
            url,
            json.dumps(payload, ensure_ascii=False).encode("utf-8"),
            headers,
            limits,
            ca_bundle=getattr(settings, "OUTBOUND_CA_BUNDLE", None),
        )
    except http.HttpError as exc:
        failure = _transport_failure(exc, limits, token)
    if failure is not None:
        raise failure  # outside the except block: the client's exception is not chained to it

    status = answer.status
    data = _json(answer.body)
    if 200 <= status < 300:
        return _success(status, data)
    raise classify(status, data, retry_after=_retry_after(answer.headers.get("retry-after")), token=token)


def list_templates(*, waba_id: str) -> Iterator[dict[str, Any]]:
    """Every message template of a WhatsApp Business Account, page by page
    (GET /{waba-id}/message_templates). The next page is asked for with the `after` cursor
    on our own URL, never by following the `paging.next` URL the answer carries: the call
    goes only where WHATSAPP_GRAPH_BASE_URL points, with the token only in its header.
    Raises a CloudApiError as the sends do (an outage is retryable, a refusal permanent)."""
    token = _token()
    _check_id(waba_id, "WABA id")
    headers = {"Authorization": f"Bearer {token}"}
    fields = "id,name,language,status,category,quality_score,rejected_reason,components"
    after = ""
    for _ in range(MAX_TEMPLATE_PAGES):
        query = {"fields": fields, "limit": str(TEMPLATES_PAGE_SIZE), **({"after": after} if after else {})}
        limits = _limits()
        failure: CloudApiError | None = None
        try:
            answer = http.get(
                f"{graph_url(waba_id)}/message_templates?{urlencode(query)}",
                headers,
                limits,
                ca_bundle=getattr(settings, "OUTBOUND_CA_BUNDLE", None),
            )
        except http.HttpError as exc:
            # Listing twice is harmless: an unknown outcome is simply retryable here.
            failure = _transport_failure(exc, limits, token)
        if failure is not None:
            raise failure
        data = _json(answer.body)
        if not 200 <= answer.status < 300:
            raise classify(
                answer.status, data, retry_after=_retry_after(answer.headers.get("retry-after")), token=token
            )
        page = data.get("data") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(page, list):
            raise CloudApiPermanent(
                f"WhatsApp Cloud API answered HTTP {answer.status} without a list of templates",
                title="no template list",
                http_status=answer.status,
            )
        yield from (item for item in page if isinstance(item, dict))
        after = _next_cursor(data)
        if not page or not after:
            return
    log.warning("template listing of a WABA stopped after %d pages", MAX_TEMPLATE_PAGES)


def _next_cursor(data: dict[str, Any]) -> str:
    """The `after` cursor when Meta says there is a next page (paging.next), else ""."""
    paging = data.get("paging")
    if not isinstance(paging, dict) or not paging.get("next"):
        return ""
    cursors = paging.get("cursors")
    return str(cursors.get("after") or "") if isinstance(cursors, dict) else ""


def _token() -> str:
    token = getattr(settings, "WHATSAPP_ACCESS_TOKEN", None)
    if not token:
        log.error("WhatsApp Cloud API not called: WHATSAPP_ACCESS_TOKEN is not set")
        raise CloudApiPermanent("WHATSAPP_ACCESS_TOKEN is not set", title="WHATSAPP_ACCESS_TOKEN is not set")
    return str(token)


def _check_id(value: str, what: str) -> None:
    """It goes into the URL's path: anything but digits could point the call elsewhere."""
    if not value:
        raise CloudApiPermanent(f"business has no WhatsApp {what}", title=f"no {what}")
    if not value.isascii() or not value.isdigit():
        raise CloudApiPermanent(f"the business's WhatsApp {what} is not digits only", title=f"invalid {what}")


def mark_read(*, phone_number_id: str, message_id: str) -> None:
    """Mark a customer's message read (the blue ticks; earlier messages of the conversation
    with it). Raises a CloudApiError, classified as for send_text, when Meta does not say yes.

    Marking read again is harmless, so unlike a send an unknown outcome can simply be retried."""
    token = getattr(settings, "WHATSAPP_ACCESS_TOKEN", None)
    if not token:
        raise CloudApiPermanent("WHATSAPP_ACCESS_TOKEN is not set", title="WHATSAPP_ACCESS_TOKEN is not set")
    if not phone_number_id or not phone_number_id.isascii() or not phone_number_id.isdigit():
        raise CloudApiPermanent(
            "the business's WhatsApp phone_number_id is missing or not digits only", title="invalid phone_number_id"
        )
    if not message_id:
        raise CloudApiPermanent("no message id to mark read", title="no message id")
    payload = {"messaging_product": "whatsapp", "status": "read", "message_id": message_id}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    limits = _limits()
    failure: CloudApiError | None = None
    try:
        answer = http.post(
            messages_url(phone_number_id),
            json.dumps(payload, ensure_ascii=False).encode("utf-8"),
            headers,
            limits,
            ca_bundle=getattr(settings, "OUTBOUND_CA_BUNDLE", None),
        )
    except http.HttpError as exc:
        failure = _transport_failure(exc, limits, token)
    if failure is not None:
        raise failure  # outside the except block: the client's exception is not chained to it
    if not 200 <= answer.status < 300:
        raise classify(
            answer.status,
            _json(answer.body),
            retry_after=_retry_after(answer.headers.get("retry-after")),
            token=token,
        )


def _transport_failure(exc: http.HttpError, limits: http.Limits, token: str) -> CloudApiError:
    """A call that got no usable answer, by whether the request may have reached Meta."""
    if isinstance(exc, http.ConnectTimedOut):
        return CloudApiRetryable("WhatsApp Cloud API connect timed out", title="connect timeout")
    if isinstance(exc, http.InvalidURL):
        # Configuration, not a passing fault.
        return CloudApiPermanent(
            "WhatsApp Cloud API request could not be made (invalid URL)", title="bad request configuration"
        )
    if not exc.sent:
        return CloudApiRetryable("WhatsApp Cloud API could not be reached", title="connection failed")
    if isinstance(exc, http.ReadTimedOut):
        return CloudApiOutcomeUnknown(
            "WhatsApp Cloud API read timed out; the message may have been sent", title="read timeout"
        )
    if isinstance(exc, http.DeadlineExceeded):
        return CloudApiOutcomeUnknown(
            f"WhatsApp Cloud API gave no complete answer within {limits.deadline:g} s; the message may have been sent",
            title="deadline exceeded",
        )
    if isinstance(exc, http.ResponseTooLarge):
        status = exc.status or 0
        if 200 <= status < 300:
            return CloudApiOutcomeUnknown(
                f"WhatsApp Cloud API answered HTTP {status} with more than "
                f"{limits.max_body} bytes; the message may have been sent",
                title="response too large",
                http_status=status,
            )
        # Not read: the HTTP status alone decides, as for a body without an error code.
        return classify(status, None, token=token)
    return CloudApiOutcomeUnknown(
        "WhatsApp Cloud API connection dropped; the message may have been sent", title="connection dropped"
    )


def build_payload(
    *, to: str, body: str, context_message_id: str | None = None, biz_opaque_callback_data: str | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        **({"recipient": to} if _BSUID.match(to) else {"to": to}),
        "type": "text",
        "text": {"body": body},
    }
    if context_message_id:
        payload["context"] = {"message_id": context_message_id}
    if biz_opaque_callback_data:
        # Echoed back in status webhooks, so a delivery status can be tied to our processing_id.
        payload["biz_opaque_callback_data"] = biz_opaque_callback_data
    return payload


def messages_url(phone_number_id: str) -> str:
    return f"{graph_url(phone_number_id)}/messages"


def graph_url(node_id: str) -> str:
    base = str(getattr(settings, "WHATSAPP_GRAPH_BASE_URL", DEFAULT_BASE_URL)).rstrip("/")
    version = str(getattr(settings, "WHATSAPP_GRAPH_VERSION", DEFAULT_VERSION)).strip("/")
    return f"{base}/{version}/{node_id}"


def classify(
    http_status: int, data: Any, *, retry_after: float | None = None, token: str | None = None
) -> CloudApiError:
    """The exception for a non-2xx answer: by Graph error code first, by HTTP status otherwise."""
    raw_error = data.get("error") if isinstance(data, dict) else None
    error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    code = error.get("code") if isinstance(error.get("code"), int) else None
    message = redact(str(error.get("message") or ""), token)
    raw_error_data = error.get("error_data")
    error_data: dict[str, Any] = raw_error_data if isinstance(raw_error_data, dict) else {}
    details = redact(str(error_data.get("details") or ""), token)[:1000]
    fbtrace_id = redact(str(error.get("fbtrace_id") or ""), token)[:64]
    title = (_TITLE_PREFIX.sub("", message) or f"HTTP {http_status}")[:MAX_TITLE_LENGTH]
    fields = _ErrorFields(code=code, title=title, http_status=http_status, fbtrace_id=fbtrace_id, details=details)
    where = f"code {code}" if code is not None else "no error code"
    text = f"WhatsApp Cloud API answered HTTP {http_status} ({where}): {title}"
    if details and details != title:
        text += f" - {details}"
    if fbtrace_id:
        text += f" [fbtrace_id {fbtrace_id}]"

    if code is not None and code in AUTH_CODES:
        log.critical(
            "WhatsApp access token rejected by the Graph API (HTTP %s, code %s, fbtrace_id %s): %s",
            http_status,
            code,
            fbtrace_id or "-",
            title,
        )
        return CloudApiAuthError(text, **fields)
    if code is not None and code in TEMPLATE_CODES:
        log.warning("WhatsApp template message refused (fix the template, then requeue): %s", text)
        return CloudApiTemplateError(text, **fields)
    if code == MARKETING_STOPPED_CODE:
        # The customer's choice, not a fault: logged at INFO, the send records it and skips.
        log.info("WhatsApp recipient stopped marketing messages (131050): %s", text)
        return CloudApiMarketingStopped(text, **fields)
    if code == PAIR_RATE_LIMIT_CODE:
        wait = max(PAIR_RATE_BACKOFF_SECONDS, retry_after or 0.0)
        log.warning("WhatsApp pair rate limit hit; backing off %.0fs for this recipient: %s", wait, text)
        return CloudApiRetryable(text, retry_after=wait, **fields)
    if code is not None and code in RETRYABLE_CODES:
        log.warning("WhatsApp send failed, will retry: %s", text)
        return CloudApiRetryable(text, retry_after=retry_after, **fields)
    if code not in PERMANENT_CODES and (http_status >= 500 or http_status == 429):
        # No code, or one we do not know, on a 5xx or 429: Meta's side is busy or in trouble.
        log.warning("WhatsApp send failed, will retry: %s", text)
        return CloudApiRetryable(text, retry_after=retry_after, **fields)
    log.warning("WhatsApp send failed for good: %s", text)
    return CloudApiPermanent(text, **fields)


def redact(text: str, token: str | None = None) -> str:
    """Hide the access token (and anything shaped like a Meta token) in text from a response."""
    if token:
        text = text.replace(token, REDACTED)
    return _TOKEN_PATTERN.sub(REDACTED, text)


def _success(status: int, data: Any) -> SendResult:
    messages = data.get("messages") if isinstance(data, dict) else None
    wamid = messages[0].get("id") if isinstance(messages, list) and messages and isinstance(messages[0], dict) else None
    if not isinstance(wamid, str) or not wamid:
        # Accepted, apparently, but with nothing to prove it: do not let a retry send it again.
        raise CloudApiOutcomeUnknown(
            f"WhatsApp Cloud API answered HTTP {status} without a message id",
            title="no message id in response",
            http_status=status,
        )
    contacts = data.get("contacts")
    wa_id = ""
    if isinstance(contacts, list) and contacts and isinstance(contacts[0], dict):
        wa_id = str(contacts[0].get("wa_id") or contacts[0].get("user_id") or "")
    return SendResult(wamid=wamid, wa_id=wa_id, http_status=status)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:  # also UnicodeDecodeError
        return None


def _limits() -> http.Limits:
    """Read per call so settings overrides (and tests) take effect without a restart."""
    return http.Limits(
        connect_timeout=float(getattr(settings, "WHATSAPP_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT)),
        read_timeout=float(getattr(settings, "WHATSAPP_READ_TIMEOUT", DEFAULT_READ_TIMEOUT)),
        deadline=float(getattr(settings, "WHATSAPP_DEADLINE_SECONDS", DEFAULT_DEADLINE_SECONDS)),
        max_body=int(getattr(settings, "WHATSAPP_MAX_RESPONSE_BYTES", DEFAULT_MAX_RESPONSE_BYTES)),
    )


def deadline_seconds() -> float:
    """The longest a send can take, whatever the server does."""
    return _limits().deadline


def _retry_after(value: str | None) -> float | None:
    """Only delta-seconds: Graph does not send HTTP dates here."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if seconds != seconds or seconds < 0:  # NaN or negative
        return None
    return min(seconds, MAX_RETRY_AFTER_SECONDS)
