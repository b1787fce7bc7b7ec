"""The WhatsApp Cloud API client and send_reply, against a local HTTP server playing the Graph API.

Each Graph error code is answered with Meta's real error shape and a realistic HTTP
status, and each must land in the right class (retry, give up, or token refused), leave
its code on the OutboundMessage row, and never let the access token out.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import traceback
from datetime import timedelta

import pytest
from django.utils import timezone
from werkzeug import Response

from core.clients import cloud_api
from core.clients.cloud_api import CloudApiAuthError, CloudApiOutcomeUnknown, CloudApiPermanent, CloudApiRetryable
from leads.models import Lead, ReviewFlag
from whatsapp.actions.base import PermanentActionError, RetryableActionError
from whatsapp.models import OutboundMessage
from whatsapp.models.outbound import ReplyInFlight, ReplyOutcomeUnknown
from whatsapp.send.reply import send_reply

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "EAAG-secret-token"
PHONE_NUMBER_ID = "106540352242922"
WA_ID = "15551234567"
INBOUND_WAMID = "wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQzQUFCRkM3QjBDMjY3NUUyQzdCRQA="
PATH = f"/v21.0/{PHONE_NUMBER_ID}/messages"
Status = OutboundMessage.Status


@pytest.fixture(autouse=True)
def closed_breaker():
    """Each test starts with the phone number's breaker closed: these tests send
    many failures in a row on purpose, which would (rightly) trip it."""
    from core.breakers import reset

    reset(f"whatsapp:{PHONE_NUMBER_ID}")
    yield
    reset(f"whatsapp:{PHONE_NUMBER_ID}")


@pytest.fixture
def graph(settings, httpserver):
    """Point the client at the local server, with a token worth leaking."""
    settings.WHATSAPP_GRAPH_BASE_URL = httpserver.url_for("").rstrip("/")
    settings.WHATSAPP_GRAPH_VERSION = "v21.0"
    settings.WHATSAPP_ACCESS_TOKEN = TOKEN
    settings.WHATSAPP_CONNECT_TIMEOUT = 2.0
    settings.WHATSAPP_READ_TIMEOUT = 5.0
    return httpserver


@pytest.fixture
def lead(business):
    business.phone_number_id = PHONE_NUMBER_ID
    business.save(update_fields=["phone_number_id"])
    return Lead.objects.create(lead_id="lead-1", business=business, wa_id=WA_ID, last_inbound_at=timezone.now())


def reply(business, lead, processing_id: str = "proc-1", **kwargs) -> OutboundMessage:
    return send_reply(
        processing_id=processing_id,
        saga_run=1,
        business=business,
        lead=lead,
        text="Thanks! A sourdough loaf is $6.50.",
        context_message_id=INBOUND_WAMID,
        **kwargs,
    )


def success_body(wamid: str = "wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA") -> dict:
    return {
        "messaging_product": "whatsapp",
        "contacts": [{"input": WA_ID, "wa_id": WA_ID}],
        "messages": [{"id": wamid}],
    }


def error_body(code: int, title: str, details: str, subcode: int | None = None) -> dict:
    error = {
        "message": f"(#{code}) {title}",
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details},
        "fbtrace_id": "AbCdEfGhIjKlMnOpQrStUv",
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


def assert_no_token(exc: BaseException, caplog, row: OutboundMessage | None = None) -> None:
    assert TOKEN not in str(exc)
    assert TOKEN not in "".join(traceback.format_exception(exc)), "the token must not reach a DLQ traceback"
    assert TOKEN not in caplog.text
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
    if row is not None:
        assert TOKEN not in json.dumps({f.name: str(getattr(row, f.attname)) for f in row._meta.concrete_fields})


# --- Success --------------------------------------------------------------------


def test_success_stores_the_wamid_and_sends_the_exact_request(graph, business, lead, caplog):
    caplog.set_level(logging.DEBUG)
    graph.expect_request(PATH, method="POST").respond_with_json(success_body())

    row = reply(business, lead)

    assert row.status == Status.SENT
    assert row.wamid == "wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
    assert row.attempts == 1 and row.http_status == 200 and row.sent_at is not None
    assert row.to == WA_ID and row.context_message_id == INBOUND_WAMID and row.error_code is None
    assert row.idempotency_key == "proc-1:1:reply"
    request, _ = graph.log[0]
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.get_json() == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": WA_ID,
        "type": "text",
        "text": {"body": "Thanks! A sourdough loaf is $6.50."},
        "context": {"message_id": INBOUND_WAMID},
        "biz_opaque_callback_data": "proc-1",
    }
    assert TOKEN not in caplog.text


def test_no_context_when_the_inbound_message_id_is_unknown(graph, business, lead):
    graph.expect_request(PATH, method="POST").respond_with_json(success_body())
    send_reply(processing_id="proc-2", saga_run=1, business=business, lead=lead, text="Hi")
    body = graph.log[0][0].get_json()
    assert "context" not in body and body["biz_opaque_callback_data"] == "proc-2"


def test_second_call_returns_the_sent_row_without_posting_again(graph, business, lead):
    graph.expect_request(PATH, method="POST").respond_with_json(success_body())
    first = reply(business, lead)
    second = reply(business, lead)
    assert second.pk == first.pk and second.status == Status.SENT and second.attempts == 1
    assert len(graph.log) == 1
    assert OutboundMessage.objects.count() == 1


def test_a_new_saga_run_is_a_new_reply(graph, business, lead):
    graph.expect_request(PATH, method="POST").respond_with_json(success_body())
    reply(business, lead)
    send_reply(processing_id="proc-1", saga_run=2, business=business, lead=lead, text="again")
    assert len(graph.log) == 2
    assert set(OutboundMessage.objects.values_list("idempotency_key", flat=True)) == {
        "proc-1:1:reply",
        "proc-1:2:reply",
    }


def test_settings_defaults():
    from django.conf import settings

    assert settings.WHATSAPP_GRAPH_BASE_URL == "https://graph.facebook.com"
    assert settings.WHATSAPP_GRAPH_VERSION == "v21.0"
    assert settings.WHATSAPP_CONNECT_TIMEOUT == 3.0
    assert settings.WHATSAPP_READ_TIMEOUT == 10.0


# --- Graph error codes ------------------------------------------------------------

RETRYABLE, PERMANENT, AUTH = "retryable", "permanent", "auth"

# (code, HTTP status, title, details, expected class)
GRAPH_ERRORS = [
    (1, 500, "An unknown error occurred", "Invalid request or possible server error.", RETRYABLE),
    (2, 503, "Service temporarily unavailable", "Temporary due to downtime or due to being overloaded.", RETRYABLE),
    (4, 400, "Application request limit reached", "The app has reached its API call rate limit.", RETRYABLE),
    (80007, 429, "Rate limit issues", "The WhatsApp Business Account has reached its rate limit.", RETRYABLE),
    (130429, 429, "Rate limit hit", "Cloud API message throughput has been reached.", RETRYABLE),
    (131016, 503, "Service unavailable", "A service is temporarily unavailable.", RETRYABLE),
    (
        131056,
        400,
        "(Business Account, Consumer Account) pair rate limit hit",
        (
            "Too many messages sent from the sender phone number to the same recipient phone number"
            " in a short period of time."
        ),
        RETRYABLE,
    ),
    (
        131047,
        400,
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
        PERMANENT,
    ),
    (131026, 400, "Message undeliverable", "Unable to deliver message.", PERMANENT),
    (131051, 400, "Unsupported message type", "Message type is not currently supported.", PERMANENT),
    (131008, 400, "Required parameter is missing", "The parameter text['body'] is required.", PERMANENT),
    (131009, 400, "Parameter value is not valid", "Value entered for the to parameter is invalid.", PERMANENT),
    (100, 400, "Invalid parameter", 'Unexpected key "txt" on param "messages".', PERMANENT),
    (0, 401, "AuthException", "We were unable to authenticate the app user.", AUTH),
    (10, 403, "Permission denied", "Permission is either not granted or has been removed.", AUTH),
    (
        190,
        401,
        "Access token has expired",
        f"Error validating access token: Session has expired. The token {TOKEN} is no longer valid.",
        AUTH,
    ),
    (200, 403, "Permissions error", "The app lacks whatsapp_business_messaging.", AUTH),
    (250, 403, "Permissions error", "Permission has not been granted.", AUTH),
    (299, 403, "Permissions error", "Permission has been revoked.", AUTH),
]


@pytest.mark.parametrize(
    ("code", "http_status", "title", "details", "kind"), GRAPH_ERRORS, ids=[f"{e[0]}-http{e[1]}" for e in GRAPH_ERRORS]
)
def test_graph_error_codes_are_classified(graph, business, lead, caplog, code, http_status, title, details, kind):
    caplog.set_level(logging.DEBUG)
    # Meta sometimes echoes the token it refused; make every response do so.
    body = error_body(code, title, f"{details} (token {TOKEN})", subcode=2494010 if code == 131047 else None)
    graph.expect_request(PATH, method="POST").respond_with_json(body, status=http_status)

    with pytest.raises(cloud_api.CloudApiError) as caught:
        reply(business, lead, processing_id=f"proc-{code}")
    exc = caught.value

    if kind == RETRYABLE:
        assert isinstance(exc, CloudApiRetryable) and isinstance(exc, RetryableActionError)
        assert not isinstance(exc, (PermanentActionError, CloudApiOutcomeUnknown))
    else:
        assert isinstance(exc, CloudApiPermanent) and isinstance(exc, PermanentActionError)
        assert not isinstance(exc, RetryableActionError)
        assert isinstance(exc, CloudApiAuthError) == (kind == AUTH)
    assert exc.code == code and exc.http_status == http_status
    assert exc.fbtrace_id == "AbCdEfGhIjKlMnOpQrStUv"
    assert exc.title == title
    if code == 131056:
        assert exc.retry_after is not None and exc.retry_after >= 6

    row = OutboundMessage.objects.get(idempotency_key=f"proc-{code}:1:reply")
    assert row.status == Status.FAILED
    assert row.error_code == code and row.error_title == title and row.http_status == http_status
    assert row.attempts == 1 and row.wamid == ""
    assert len(graph.log) == 1
    if kind == AUTH:
        loud = [
            r
            for r in caplog.records
            if r.levelno >= logging.ERROR and "WhatsApp access token rejected" in r.getMessage()
        ]
        assert loud, "a refused token must be logged at ERROR or above"
    assert_no_token(exc, caplog, row)


@pytest.mark.parametrize(
    ("http_status", "body", "kind"),
    [
        (500, "<html>Internal Server Error</html>", RETRYABLE),
        (502, "Bad Gateway", RETRYABLE),
        (503, "", RETRYABLE),
        (429, "", RETRYABLE),
        (404, "Not Found", PERMANENT),
        (400, "oops", PERMANENT),
    ],
)
def test_answers_without_a_graph_error_are_classified_by_http_status(
    graph, business, lead, caplog, http_status, body, kind
):
    caplog.set_level(logging.DEBUG)
    graph.expect_request(PATH, method="POST").respond_with_data(body, status=http_status)
    with pytest.raises(cloud_api.CloudApiError) as caught:
        reply(business, lead)
    expected = CloudApiRetryable if kind == RETRYABLE else CloudApiPermanent
    assert isinstance(caught.value, expected) and caught.value.code is None
    assert not isinstance(caught.value, CloudApiOutcomeUnknown)
    row = OutboundMessage.objects.get()
    assert row.status == Status.FAILED and row.http_status == http_status and row.error_code is None
    assert_no_token(caught.value, caplog, row)


def test_permanent_code_wins_over_a_5xx(graph, business, lead):
    graph.expect_request(PATH, method="POST").respond_with_json(
        error_body(131047, "Re-engagement message", "More than 24 hours have passed."), status=500
    )
    with pytest.raises(CloudApiPermanent):
        reply(business, lead)
    sent = OutboundMessage.objects.get(processing_id="proc-1")
    assert (sent.status, sent.error_code) == (Status.FAILED, 131047)


def test_pair_rate_limit_honours_a_longer_retry_after(graph, business, lead):
    graph.expect_request(PATH, method="POST").respond_with_json(
        error_body(131056, "(Business Account, Consumer Account) pair rate limit hit", "Too many messages."),
        status=400,
        headers={"Retry-After": "20"},
    )
    with pytest.raises(CloudApiRetryable) as caught:
        reply(business, lead)
    assert caught.value.retry_after == 20


def test_a_retryable_failure_is_sent_again_on_the_next_call(graph, business, lead):
    graph.expect_oneshot_request(PATH, method="POST").respond_with_json(
        error_body(131016, "Service unavailable", "A service is temporarily unavailable."), status=503
    )
    graph.expect_oneshot_request(PATH, method="POST").respond_with_json(success_body())

    with pytest.raises(CloudApiRetryable):
        reply(business, lead)
    row = reply(business, lead)

    assert row.status == Status.SENT and row.attempts == 2 and row.wamid
    assert row.error_code is None and row.error_title == ""
    assert len(graph.log) == 2


def test_missing_token_is_a_clear_permanent_error(graph, settings, business, lead, caplog):
    settings.WHATSAPP_ACCESS_TOKEN = None
    with pytest.raises(PermanentActionError, match="WHATSAPP_ACCESS_TOKEN is not set"):
        reply(business, lead)
    assert len(graph.log) == 0
    assert OutboundMessage.objects.get().status == Status.FAILED


# --- Skips ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "last_inbound", [timedelta(hours=25), timedelta(hours=24), None], ids=["25h", "24h", "unknown"]
)
def test_closed_window_skips_and_flags_the_lead(graph, business, lead, last_inbound):
    now = timezone.now()
    lead.last_inbound_at = None if last_inbound is None else now - last_inbound
    lead.save(update_fields=["last_inbound_at"])

    row = reply(business, lead, now=now)
    again = reply(business, lead, now=now)

    assert row.status == again.status == Status.SKIPPED_WINDOW_CLOSED and row.attempts == 0
    assert len(graph.log) == 0
    flag = ReviewFlag.objects.get()
    assert flag.idempotency_key == "proc-1:1:reply-window" and flag.reason == "window_closed"
    assert flag.lead_id == lead.pk and flag.status == ReviewFlag.Status.OPEN
    lead.refresh_from_db()
    assert lead.needs_review is True


def test_open_window_just_inside_24h_sends(graph, business, lead):
    graph.expect_request(PATH, method="POST").respond_with_json(success_body())
    now = timezone.now()
    lead.last_inbound_at = now - timedelta(hours=23, minutes=59)
    assert reply(business, lead, now=now).status == Status.SENT


def test_replies_disabled_skips(graph, business, lead):
    business.replies_enabled = False
    business.save(update_fields=["replies_enabled"])
    row = reply(business, lead)
    assert row.status == Status.SKIPPED_DISABLED and len(graph.log) == 0
    assert not ReviewFlag.objects.exists()


# --- Unknown outcomes -------------------------------------------------------------------


def test_read_timeout_marks_unknown_and_is_never_resent(graph, settings, business, lead, caplog):
    caplog.set_level(logging.DEBUG)
    settings.WHATSAPP_READ_TIMEOUT = 0.3
    release = threading.Event()

    def slow(request):
        release.wait(5)
        return Response(json.dumps(success_body()), status=200, content_type="application/json")

    graph.expect_request(PATH, method="POST").respond_with_handler(slow)
    try:
        with pytest.raises(CloudApiOutcomeUnknown) as caught:
            reply(business, lead)
    finally:
        release.set()
    assert isinstance(caught.value, RetryableActionError)
    row = OutboundMessage.objects.get()
    assert row.status == Status.UNKNOWN and row.attempts == 1 and row.wamid == ""
    _wait_for(lambda: len(graph.log) == 1)

    with pytest.raises(PermanentActionError, match="reply outcome unknown; not re-sent to avoid a duplicate") as again:
        reply(business, lead)
    assert isinstance(again.value, ReplyOutcomeUnknown)
    time.sleep(0.2)
    assert len(graph.log) == 1
    row.refresh_from_db()
    assert row.status == Status.UNKNOWN and row.attempts == 1
    assert_no_token(caught.value, caplog, row)
    assert_no_token(again.value, caplog)


def test_connection_dropped_after_the_request_is_unknown(settings, business, lead):
    """The server reads the request, then hangs up without answering: Meta may have it."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def hang_up():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    settings.WHATSAPP_GRAPH_BASE_URL = f"http://127.0.0.1:{port}"
    settings.WHATSAPP_ACCESS_TOKEN = TOKEN
    try:
        with pytest.raises(CloudApiOutcomeUnknown):
            reply(business, lead)
    finally:
        thread.join(5)
        listener.close()
    assert OutboundMessage.objects.get().status == Status.UNKNOWN


def test_connection_refused_is_retryable_and_resendable(settings, business, lead):
    """Nothing listening: the request cannot have arrived, so the row stays sendable."""
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    settings.WHATSAPP_GRAPH_BASE_URL = f"http://127.0.0.1:{port}"
    settings.WHATSAPP_ACCESS_TOKEN = TOKEN
    with pytest.raises(CloudApiRetryable) as caught:
        reply(business, lead)
    assert not isinstance(caught.value, CloudApiOutcomeUnknown)
    assert OutboundMessage.objects.get().status == Status.FAILED


def test_a_2xx_without_a_message_id_is_unknown(graph, business, lead):
    graph.expect_request(PATH, method="POST").respond_with_json({"messaging_product": "whatsapp"})
    with pytest.raises(CloudApiOutcomeUnknown):
        reply(business, lead)
    assert OutboundMessage.objects.get().status == Status.UNKNOWN


def test_a_row_left_sending_by_a_dead_worker_is_not_resent(graph, business, lead):
    graph.expect_request(PATH, method="POST").respond_with_json(success_body())
    row = OutboundMessage.objects.create(
        processing_id="proc-1",
        saga_run=1,
        idempotency_key="proc-1:1:reply",
        business=business,
        lead=lead,
        to=WA_ID,
        body="hi",
        status=Status.SENDING,
        attempts=1,
    )

    with pytest.raises(ReplyInFlight):  # could still be in flight
        reply(business, lead)
    OutboundMessage.objects.filter(pk=row.pk).update(updated_at=timezone.now() - timedelta(minutes=5))
    with pytest.raises(ReplyOutcomeUnknown):
        reply(business, lead)
    with pytest.raises(ReplyOutcomeUnknown):
        reply(business, lead)
    assert len(graph.log) == 0
    assert OutboundMessage.objects.get().status == Status.UNKNOWN


# --- Redaction ---------------------------------------------------------------------------


def test_redact_hides_our_token_and_any_meta_token():
    other = "EAAJZBzKqL0xYBO7ZC9abcdefGHIJKLmnop"
    text = cloud_api.redact(f"bad {TOKEN} and {other}", TOKEN)
    assert TOKEN not in text and other not in text and text.count("[redacted]") == 2


def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


# --- Bounds: the total deadline and the response cap ----------------------------------------


def _drip_server(head: bytes, drip: bytes, interval: float):
    """A raw server for one request: `head` at once, then `drip` a byte at a time. Returns
    (base URL, event set if the client hung up before the end)."""
    listener = socket.create_server(("127.0.0.1", 0))
    cut_off = threading.Event()

    def serve():
        conn, _ = listener.accept()
        with conn, listener:
            conn.settimeout(30)
            received = b""
            while b"\r\n\r\n" not in received:
                received += conn.recv(65536)
            try:
                conn.sendall(head)
                for byte in drip:
                    conn.sendall(bytes([byte]))
                    time.sleep(interval)
            except OSError:
                cut_off.set()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", cut_off


def test_a_send_dripping_past_the_deadline_is_unknown_and_never_resent(settings, business, lead, caplog):
    """Each byte of the answer comes well within the read timeout; the total deadline still ends
    the call. The request went out, so the reply may be on the customer's phone: UNKNOWN."""
    body = json.dumps(success_body()).encode()
    base, cut_off = _drip_server(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n",
        b"Content-Length: %d\r\n\r\n" % len(body) + body,
        interval=0.05,
    )
    settings.WHATSAPP_GRAPH_BASE_URL = base
    settings.WHATSAPP_ACCESS_TOKEN = TOKEN
    settings.WHATSAPP_READ_TIMEOUT = 5.0
    settings.WHATSAPP_DEADLINE_SECONDS = 1.0
    with pytest.raises(CloudApiOutcomeUnknown, match="no complete answer within 1 s") as caught:
        reply(business, lead)
    assert caught.value.title == "deadline exceeded"
    _wait_for(cut_off.is_set, timeout=10)
    row = OutboundMessage.objects.get()
    assert row.status == Status.UNKNOWN and row.error_title == "deadline exceeded"
    with pytest.raises(ReplyOutcomeUnknown):
        reply(business, lead)
    assert_no_token(caught.value, caplog, row)


def test_an_answer_over_the_cap_is_not_read(graph, settings, business, lead):
    settings.WHATSAPP_MAX_RESPONSE_BYTES = 4096
    padded = {**success_body(), "padding": "p" * 5000}
    graph.expect_ordered_request(PATH, method="POST").respond_with_json(
        {**error_body(131000, "Something went wrong", "x" * 5000)}, status=503
    )
    graph.expect_ordered_request(PATH, method="POST").respond_with_json(padded)
    # A large error answer: classified by its HTTP status alone, and retried.
    with pytest.raises(CloudApiRetryable) as first:
        reply(business, lead)
    assert not isinstance(first.value, CloudApiOutcomeUnknown) and first.value.http_status == 503
    assert OutboundMessage.objects.get().status == Status.FAILED
    # A large 2xx: it may have been sent, but its wamid is not read.
    with pytest.raises(CloudApiOutcomeUnknown, match="more than 4096 bytes") as second:
        reply(business, lead)
    assert second.value.title == "response too large"
    assert OutboundMessage.objects.get().status == Status.UNKNOWN


def test_a_phone_number_id_that_is_not_digits_is_never_put_in_the_url(graph, business, lead):
    business.phone_number_id = "../../v21.0/me"
    with pytest.raises(CloudApiPermanent, match="not digits only"):
        cloud_api.send_text(phone_number_id=business.phone_number_id, to=WA_ID, body="hi")
    assert len(graph.log) == 0


def test_the_graph_base_url_may_not_carry_credentials():
    from config.env import Env, SettingError

    with pytest.raises(SettingError, match="must not carry credentials") as caught:
        Env({"WHATSAPP_GRAPH_BASE_URL": "https://meta:hunter2-x@graph.example.com"}).url(
            "WHATSAPP_GRAPH_BASE_URL", "https://graph.facebook.com", schemes=("https", "http"), credentials=False
        )
    assert "hunter2-x" not in str(caught.value)


# --- Opted out (whatsapp.handlers.opt_out) -----------------------------------------------


def test_an_opted_out_customer_gets_no_reply_and_nobody_is_asked_to_follow_up(graph, business, lead):
    lead.opt_out(source="keyword")
    row = reply(business, lead)
    again = reply(business, lead)
    assert row.status == again.status == Status.SKIPPED_OPTED_OUT and row.attempts == 0
    assert len(graph.log) == 0
    assert not ReviewFlag.objects.exists()
    lead.refresh_from_db()
    assert lead.needs_review is False


def test_an_opted_out_customer_with_the_window_closed_gets_no_template_either(graph, business, lead):
    lead.opt_out(source="admin", by="ops")
    lead.last_inbound_at = timezone.now() - timedelta(hours=30)
    row = reply(business, lead, kind="order_confirmed", fields={"language": "en"})
    assert row.status == Status.SKIPPED_OPTED_OUT and len(graph.log) == 0
    assert not ReviewFlag.objects.exists(), "not flagged as window closed: the customer asked for silence"


def test_the_opt_out_confirmation_is_the_one_reply_that_goes(graph, business, lead):
    graph.expect_request(PATH, method="POST").respond_with_json(success_body())
    lead.opt_out(source="keyword")
    row = reply(business, lead, confirms_opt_out=True)
    assert row.status == Status.SENT and len(graph.log) == 1
    assert json.loads(graph.log[0][0].data)["type"] == "text"


def test_131050_records_the_marketing_stop_and_skips_without_retry_or_dead_letter(graph, business, lead, caplog):
    graph.expect_request(PATH, method="POST").respond_with_json(
        error_body(131050, "Unable to deliver the message", "The user has stopped marketing messages."), status=400
    )
    with caplog.at_level(logging.INFO):
        row = reply(business, lead)
    assert (row.status, row.error_code, row.attempts) == (Status.SKIPPED_OPTED_OUT, 131050, 1)
    assert reply(business, lead).status == Status.SKIPPED_OPTED_OUT and len(graph.log) == 1, "never sent again"
    lead.refresh_from_db()
    assert lead.marketing_stopped_at is not None and lead.opted_out_at is None
    assert list(lead.activities.values_list("kind", "detail")) == [
        ("marketing_stopped", {"source": "cloud_api_131050"})
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "the customer's choice is no alarm"
    assert isinstance(cloud_api.classify(400, error_body(131050, "x", "y")), CloudApiPermanent)
