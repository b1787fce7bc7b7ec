"""The WhatsApp webhook over real HTTP, with Meta's payload shapes: pytest-django's live server
(in this process, on the test database) and, for the database outage, a runserver child process
whose database connection goes through a proxy the test cuts. Published requests are read back
from a real Kafka topic, to its end."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import pytest
import requests
from prometheus_client import REGISTRY

from devtools.services import free_port
from leads.models import Lead
from tests.support import kafka as kafka_support
from tests.support import meta
from tests.support.processes import ManagedProcess, wait_until
from tests.support.proxy import FaultProxy
from tests.support.webhook import copies_per_processing_id, requests_on
from whatsapp.contracts.request import parse_request, processing_id_for
from whatsapp.models import InboundMessage, WebhookChange, WebhookDelivery

URL = "/webhooks/whatsapp/"


def received(kind: str) -> float:
    return REGISTRY.get_sample_value("whatsapp_webhook_received_total", {"kind": kind}) or 0.0


def post(base: str, body: bytes, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.post(
        base + URL, data=body, headers=meta.signed_headers(body) if headers is None else headers, timeout=15
    )


@pytest.fixture
def web(live_server, webhook_secrets, wa_business) -> str:
    return live_server.url


def test_the_verify_handshake_echoes_the_challenge_only_for_our_token(web):
    good = {"hub.mode": "subscribe", "hub.verify_token": meta.VERIFY_TOKEN, "hub.challenge": "1158201444"}
    answer = requests.get(web + URL, params=good, timeout=10)
    assert answer.status_code == 200 and answer.text == "1158201444"
    assert answer.headers["Content-Type"].startswith("text/plain")
    # Without the trailing slash too: Meta calls the URL exactly as it was typed.
    assert requests.get(web + URL.rstrip("/"), params=good, timeout=10).text == "1158201444"
    for wrong in (
        {**good, "hub.verify_token": meta.VERIFY_TOKEN + "x"},
        {**good, "hub.mode": "unsubscribe"},
        {"hub.mode": "subscribe", "hub.challenge": "1"},
        {},
    ):
        refused = requests.get(web + URL, params=wrong, timeout=10)
        assert refused.status_code == 403, wrong
        assert "1158201444" not in refused.text and meta.VERIFY_TOKEN not in refused.text


def test_bad_missing_and_wrong_secret_signatures_are_refused_and_nothing_is_stored(web):
    body = meta.encode(meta.message_delivery(meta.text_message("hola")))
    before = received("refused_signature")
    for headers in (
        {"Content-Type": "application/json"},  # missing
        {"X-Hub-Signature-256": "sha256=" + "0" * 64},  # bad
        {"X-Hub-Signature-256": meta.sign(body, "not-the-app-secret")},  # wrong secret
        {"X-Hub-Signature-256": meta.sign(body)[len("sha256=") :]},  # no scheme
        {"X-Hub-Signature-256": meta.sign(body + b" ")},  # other bytes
    ):
        answer = post(web, body, headers)
        assert answer.status_code == 403, headers
        assert meta.APP_SECRET not in answer.text
    assert received("refused_signature") - before == 5
    assert WebhookDelivery.objects.count() == 0 and InboundMessage.objects.count() == 0
    # A plain form POST is no way round it either (the view is CSRF-exempt, not open).
    assert requests.post(web + URL, data={"a": "b"}, timeout=10).status_code == 403


def test_a_body_with_emoji_and_arabic_verifies_and_keeps_its_text(web):
    text = "مرحبا، أريد طلب ٣ خبز 🍞🙏 — ¿también café?"
    message = meta.text_message(text)
    body = meta.encode(meta.message_delivery(message, name="فاطمة 🌸"))
    assert text.encode() in body, "sent as raw UTF-8, not \\u escapes"
    answer = post(web, body)
    assert answer.status_code == 200, answer.text
    row = InboundMessage.objects.get()
    assert (row.wamid, row.text, row.profile_name, row.type) == (message["id"], text, "فاطمة 🌸", "text")
    assert row.business is not None and row.state == InboundMessage.State.PENDING
    assert row.received_at == datetime.fromtimestamp(int(message["timestamp"]), UTC)
    assert bytes(WebhookDelivery.objects.get().body) == body, "the raw body is kept byte for byte"
    # The \u-escaped form of the same JSON is other bytes with its own signature: it verifies too.
    escaped = meta.encode(meta.message_delivery(meta.text_message(text)), ascii_only=True)
    assert b"\\u" in escaped
    assert post(web, escaped).status_code == 200
    assert set(InboundMessage.objects.values_list("text", flat=True)) == {text}


def test_a_delivery_posted_three_times_is_one_message_and_one_request_event(
    web, wa_business, bootstrap, request_topic, start_relay
):
    message = meta.text_message("I'd like 2 sourdough loaves please")
    body = meta.encode(meta.message_delivery(message, name="Ana Souza"))
    duplicates, replays = received("duplicate"), received("replay")
    for _ in range(3):
        assert post(web, body).status_code == 200
    assert WebhookDelivery.objects.count() == 1, "the same bytes are kept once"
    assert received("replay") - replays == 2
    # Meta's redelivery in other bytes (another contact name) is a second delivery, one message.
    assert post(web, meta.encode(meta.message_delivery(message, name="Ana S."))).status_code == 200
    assert WebhookDelivery.objects.count() == 2, "each delivery is kept as it came"
    assert InboundMessage.objects.count() == 1
    assert received("duplicate") - duplicates == 1

    relay = start_relay(request_topic)
    wait_until(
        lambda: InboundMessage.objects.filter(state=InboundMessage.State.PUBLISHED).count() == 1,
        timeout=60,
        message="the message published",
    )
    assert post(web, body).status_code == 200, "a redelivery after publishing is absorbed too"
    records = kafka_support.read_all(bootstrap, request_topic)
    assert len(records) == 1, relay.output()[-3000:]
    key, value = records[0]
    request = parse_request(value)  # as the classifier validates it
    assert request.processing_id == processing_id_for(message["id"])
    lead = Lead.objects.get(wa_id=meta.CUSTOMER)
    assert key == request.lead_id.encode() == lead.lead_id.encode(), "the lead's opaque id, never the number"
    assert meta.CUSTOMER.encode() not in key
    assert (request.business_id, request.tenant_id) == (wa_business.business_id, wa_business.tenant_id)
    assert (request.customer.wa_id, request.customer.name) == (meta.CUSTOMER, "Ana Souza")
    assert (request.message.id, request.message.type, request.message.text) == (
        message["id"],
        "text",
        "I'd like 2 sourdough loaves please",
    )
    # Meta's timestamp, not the time we stored it: the lead's 24-hour window runs from it.
    assert request.message.received_at == datetime.fromtimestamp(int(message["timestamp"]), UTC)
    row = InboundMessage.objects.get()
    assert row.published_at is not None and row.publish_attempts == 1 and row.last_error == ""


def test_redeliveries_racing_each_other_store_one_message_and_count_exactly(web):
    """Meta retries a slow answer while the first attempt is still in flight."""
    from concurrent.futures import ThreadPoolExecutor

    message = meta.text_message("are you open on sunday?")
    # Six bodies for one message, each in its own bytes, and one of them sent twice more.
    bodies = [meta.encode(meta.message_delivery(message, name=f"Ana {n}")) for n in range(6)]
    bodies += bodies[:1] * 2
    replays = received("replay")
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda body: post(web, body).status_code, bodies))
    assert answers == [200] * 8
    assert InboundMessage.objects.filter(wamid=message["id"]).count() == 1
    deliveries = WebhookDelivery.objects.all()
    assert len(deliveries) == 6
    assert sorted(d.new_messages for d in deliveries) == [0, 0, 0, 0, 0, 1]
    assert sum(d.duplicates for d in deliveries) == 5
    assert received("replay") - replays == 2


def test_media_buttons_and_list_replies_become_requests_with_their_text(web, bootstrap, request_topic, start_relay):
    image = meta.image_message(caption="do you have this one?")
    button = meta.button_message("Confirm order")
    listed = meta.interactive_message("Rye, 1 kg", kind="list_reply")
    assert post(web, meta.encode(meta.message_delivery(image, button, listed))).status_code == 200
    start_relay(request_topic)
    wait_until(
        lambda: InboundMessage.objects.filter(state=InboundMessage.State.PUBLISHED).count() == 3,
        timeout=60,
        message="three published",
    )
    by_id = {event["message"]["id"]: event["message"] for event in requests_on(bootstrap, request_topic)}
    assert by_id[image["id"]]["type"] == "image"
    assert by_id[image["id"]]["text"] == "do you have this one?"
    assert by_id[image["id"]]["media"] == {
        "id": "1479537139650973",
        "mime_type": "image/jpeg",
        "caption": "do you have this one?",
    }
    assert (by_id[button["id"]]["type"], by_id[button["id"]]["text"]) == ("button", "Confirm order")
    assert (by_id[listed["id"]]["type"], by_id[listed["id"]]["text"]) == ("interactive", "Rye, 1 kg")


def test_only_non_json_or_oversized_signed_bodies_are_400_and_nothing_is_stored(web, settings):
    settings.WHATSAPP_WEBHOOK_MAX_BYTES = 4096
    malformed = received("malformed")
    for body in (b'{"object": "whatsapp_business_account", "entry": [', b"\xff\xfe not utf-8"):
        answer = post(web, body)
        assert answer.status_code == 400, body[:60]
    assert received("malformed") - malformed == 2
    oversized = received("oversized")
    big = meta.encode(meta.message_delivery(meta.text_message("x" * 5000)))
    answer = post(web, big)
    assert answer.status_code == 400 and "too large" in answer.text
    assert received("oversized") - oversized == 1
    assert WebhookDelivery.objects.count() == 0 and InboundMessage.objects.count() == 0


def test_a_signed_delivery_with_an_odd_item_is_kept_whole_and_answered_200(web):
    """What a signed body holds is never a reason to refuse it: Meta would retry, then drop
    every other message with it. The odd item is kept as its own UNREADABLE row."""
    unreadable = received("unreadable")
    broken = meta.message_delivery(meta.text_message("hello"), meta.text_message("secret text 4111"))
    del broken["entry"][0]["changes"][0]["value"]["messages"][1]["id"]
    answer = post(web, meta.encode(broken))
    assert answer.status_code == 200
    assert "secret text" not in answer.text
    assert post(web, b"[]").status_code == 200, "JSON, signed: kept as an unreadable change"
    assert WebhookDelivery.objects.count() == 2
    rows = {row.state: row for row in InboundMessage.objects.all()}
    assert set(rows) == {InboundMessage.State.PENDING, InboundMessage.State.UNREADABLE}
    odd = rows[InboundMessage.State.UNREADABLE]
    assert odd.json_path == "entry[0].changes[0].value.messages[1]" and "id" in odd.last_error
    assert "secret text" not in odd.last_error
    assert received("unreadable") - unreadable == 1
    assert WebhookChange.objects.filter(state="UNREADABLE").count() == 1, "the [] body, kept"


def test_a_message_for_an_unknown_number_is_kept_as_unroutable_and_counted(web, request_topic, start_relay, bootstrap):
    unroutable = received("unroutable")
    message = meta.text_message("hello?")
    answer = post(web, meta.encode(meta.message_delivery(message, phone_number_id="999000111")))
    assert answer.status_code == 200, "recorded, not retried by Meta"
    row = InboundMessage.objects.get()
    assert row.business is None and row.state == InboundMessage.State.UNROUTABLE
    assert row.phone_number_id == "999000111" and row.text == "hello?"
    assert received("unroutable") - unroutable == 1
    assert WebhookDelivery.objects.get().unroutable == 1
    # The relay leaves it alone: nothing to publish, no error loop.
    relay = start_relay(request_topic)
    wait_until(lambda: "publishing the outbox" in relay.output(), timeout=30, message="the relay running")
    assert requests_on(bootstrap, request_topic) == []
    row.refresh_from_db()
    assert row.state == InboundMessage.State.UNROUTABLE and row.publish_attempts == 0


def test_statuses_are_accepted_and_counted(web):
    statuses = received("status")
    body = meta.encode(meta.status_delivery(meta.status("wamid.X", "delivered"), meta.status("wamid.X", "read")))
    assert post(web, body).status_code == 200
    assert received("status") - statuses == 2
    assert WebhookDelivery.objects.get().statuses == 2


def test_without_an_app_secret_deliveries_are_refused_never_taken_unsigned(web, settings):
    settings.WHATSAPP_APP_SECRET = None
    body = meta.encode(meta.message_delivery(meta.text_message("hello")))
    assert post(web, body).status_code == 503
    assert post(web, body, {"Content-Type": "application/json"}).status_code == 503
    assert InboundMessage.objects.count() == 0


@pytest.mark.slow
def test_database_down_answers_503_and_the_redelivery_is_stored_and_published_once(
    wa_business, child_env, processes, bootstrap, request_topic, start_relay
):
    from django.db import connection

    db = connection.settings_dict
    proxy = FaultProxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432))
    try:
        port = free_port()
        env = {
            **child_env,
            "DATABASE_URL": child_env["DATABASE_URL"].replace(f":{db['PORT'] or 5432}/", f":{proxy.port}/"),
            "DATABASE_CONNECT_TIMEOUT": "2",
            "WHATSAPP_APP_SECRET": meta.APP_SECRET,
            "WHATSAPP_VERIFY_TOKEN": meta.VERIFY_TOKEN,
        }
        web = ManagedProcess(
            "web-webhook", [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"], env
        )
        processes.append(web)
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return requests.get(f"{base}/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(up, timeout=30, message="the web process")
        first = meta.text_message("first, before the outage")
        assert post(base, meta.encode(meta.message_delivery(first))).status_code == 200

        proxy.cut()
        message = meta.text_message("sent while the database is down")
        body = meta.encode(meta.message_delivery(message))
        answers = [post(base, body).status_code for _ in range(2)]
        assert answers == [503, 503], web.output()[-3000:]
        assert "answering 503 so Meta delivers it again" in web.output()
        assert meta.APP_SECRET not in web.output()
        assert not InboundMessage.objects.filter(wamid=message["id"]).exists()

        proxy.restore()
        # Meta redelivers, more than once as it may: one row.
        wait_until(lambda: post(base, body).status_code == 200, timeout=30, message="the web process to recover")
        assert post(base, body).status_code == 200
        assert InboundMessage.objects.filter(wamid=message["id"]).count() == 1

        start_relay(request_topic)
        wait_until(
            lambda: InboundMessage.objects.filter(state=InboundMessage.State.PUBLISHED).count() == 2,
            timeout=60,
            message="both published",
        )
        copies = copies_per_processing_id(requests_on(bootstrap, request_topic))
        assert copies == {processing_id_for(first["id"]): 1, processing_id_for(message["id"]): 1}
    finally:
        proxy.close()
