"""What leaves for Sentry carries no request secret: the handshake's query string holds the
verify token, a webhook body holds customers' messages and numbers, headers hold the
signature and bearer tokens. The event is shaped as sentry-sdk's Django integration fills it."""

from __future__ import annotations

import json

from core.sentry import scrub_event

VERIFY_TOKEN, ACCESS_TOKEN, SIGNATURE, NUMBER = "verify-5f1c2a", "EAAG-token-77", "sha256=abc123", "15550123456"


def handshake_event() -> dict:
    return {
        "transaction": "/webhooks/whatsapp/",
        "request": {
            "url": f"https://shop.example.com/webhooks/whatsapp/?hub.verify_token={VERIFY_TOKEN}&hub.challenge=1",
            "method": "POST",
            "query_string": f"hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}",
            "headers": {
                "Authorization": f"Bearer {ACCESS_TOKEN}",
                "X-Hub-Signature-256": SIGNATURE,
                "Cookie": "sessionid=s3ss10n",
                "User-Agent": "facebookexternalua",
            },
            "cookies": {"sessionid": "s3ss10n"},
            "data": {"entry": [{"changes": [{"value": {"contacts": [{"wa_id": NUMBER}]}}]}]},
            "env": {"REMOTE_ADDR": "127.0.0.1"},
        },
    }


def test_an_event_leaves_without_query_string_body_cookies_or_credential_headers():
    event = scrub_event(handshake_event(), {})
    text = json.dumps(event)
    for secret in (VERIFY_TOKEN, ACCESS_TOKEN, SIGNATURE, NUMBER, "s3ss10n"):
        assert secret not in text, secret
    request = event["request"]
    assert request["url"] == "https://shop.example.com/webhooks/whatsapp/", "the path stays"
    assert request["headers"]["User-Agent"] == "facebookexternalua", "harmless headers stay"
    assert event["transaction"] == "/webhooks/whatsapp/"


def test_an_event_without_a_request_is_sent_as_it_is():
    event = {"message": "ingest: batch committed", "level": "info"}
    assert scrub_event(dict(event), None) == event


def test_sentry_is_set_up_to_scrub_every_event_and_transaction():
    """As the app set it up when it started (whatsapp's AppConfig.ready)."""
    import sentry_sdk

    options = sentry_sdk.get_client().options
    assert options["before_send"] is scrub_event and options["before_send_transaction"] is scrub_event
    assert options["max_request_body_size"] == "never" and not options["send_default_pii"]
