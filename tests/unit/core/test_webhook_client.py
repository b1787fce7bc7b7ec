"""The sales webhook client's safety: where it may connect (the SSRF guard), how long a call
may take (the total deadline, against a server that drips its answer byte by byte), how
much of an answer it reads (the cap), and the timestamped signature a receiver checks. (The
POST made with no database transaction open: tests/integration/core/test_webhook_client.py.)

The guard is tested on addresses it must refuse by resolving them only: nothing here
ever connects anywhere but 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time

import pytest
import requests
from django.core.exceptions import ValidationError
from werkzeug import Request, Response

from core import breakers
from core.clients import destinations, webhook
from leads.models import validate_sales_webhook_url
from tests.support.processes import wait_until
from whatsapp.actions.base import PermanentActionError, RetryableActionError

SECRET = "whsec-receiver-check-5e4d3c"
HOOK = "/hooks/sales"


def post(url: str, payload: dict | None = None, secret: str = "") -> webhook.WebhookResponse:
    return webhook.post_json(
        url, payload or {"type": "notification"}, idempotency_key="p-1:1:2:NOTIFY_SALES", secret=secret
    )


# --- The SSRF guard ---------------------------------------------------------------------


@pytest.fixture
def nothing_allowed(settings):
    settings.SALES_WEBHOOK_ALLOWED_HOSTS = []
    settings.SALES_WEBHOOK_ALLOW_HTTP = False
    return settings


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1/hook", "loopback"),
        ("https://127.8.9.10:8443/hook", "loopback"),
        ("https://[::1]/hook", "loopback"),
        ("https://[::ffff:127.0.0.1]/hook", "loopback"),
        ("https://10.20.30.40/hook", "private"),
        ("https://172.16.5.4/hook", "private"),
        ("https://192.168.1.10/hook", "private"),
        ("https://[fd12:3456::1]/hook", "private"),
        ("https://169.254.10.20/hook", "link-local"),
        ("https://[fe80::1]/hook", "link-local"),
        ("https://169.254.169.254/latest/meta-data/iam/", "metadata"),
        ("https://[fd00:ec2::254]/latest/", "metadata"),
        ("https://100.100.100.200/latest/", "metadata"),
        ("https://0.0.0.0/hook", "unspecified"),
        ("https://224.0.0.1/hook", "multicast"),
        ("https://100.64.1.1/hook", "non-public"),
    ],
)
def test_guard_refuses_loopback_private_link_local_and_metadata_addresses(nothing_allowed, url, reason):
    with pytest.raises(destinations.DestinationRefused, match=reason) as caught:
        destinations.resolve(url)
    assert "SALES_WEBHOOK_ALLOWED_HOSTS" in str(caught.value)
    # The admin refuses the same URL when a business is saved.
    with pytest.raises(ValidationError, match=reason):
        validate_sales_webhook_url(url)


def test_guard_refuses_a_host_name_if_any_address_it_resolves_to_is_not_public(nothing_allowed, monkeypatch):
    real = socket.getaddrinfo
    answers = {"crm.split-horizon.test": ["93.184.215.14", "10.0.0.7"], "localhost": ["127.0.0.1"]}

    def resolver(host, port, *args, **kwargs):
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with pytest.raises(destinations.DestinationRefused, match=r"resolves to 10\.0\.0\.7, a private address"):
        destinations.resolve("https://crm.split-horizon.test/hook")
    with pytest.raises(destinations.DestinationRefused, match="localhost"):
        destinations.resolve("https://localhost:8443/hook")
    answers["crm.public.test"] = ["93.184.215.14"]
    assert destinations.resolve("https://crm.public.test/hook") == "93.184.215.14"


def test_listed_hosts_addresses_and_networks_are_accepted(nothing_allowed):
    settings = nothing_allowed
    settings.SALES_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1", "10.0.0.0/8", "localhost", "fe80::1"]
    assert destinations.resolve("https://127.0.0.1:8443/hook") == "127.0.0.1"
    assert destinations.resolve("https://10.20.30.40/hook") == "10.20.30.40"
    assert destinations.resolve("https://[fe80::1]/hook") == "fe80::1"
    assert destinations.resolve("https://localhost:8443/hook") in ("127.0.0.1", "::1")
    validate_sales_webhook_url("https://10.20.30.40/hook")
    with pytest.raises(destinations.DestinationRefused, match="private"):
        destinations.resolve("https://192.168.1.10/hook")
    # A network entry never lets the metadata service through; naming its address does.
    settings.SALES_WEBHOOK_ALLOWED_HOSTS = ["169.254.0.0/16"]
    assert destinations.resolve("https://169.254.10.20/hook") == "169.254.10.20"
    with pytest.raises(destinations.DestinationRefused, match="metadata"):
        destinations.resolve("https://169.254.169.254/latest/")
    settings.SALES_WEBHOOK_ALLOWED_HOSTS = ["169.254.169.254"]
    assert destinations.resolve("https://169.254.169.254/latest/") == "169.254.169.254"


def test_a_refused_destination_is_never_called_and_a_listed_one_is(nothing_allowed, httpserver):
    settings = nothing_allowed
    settings.SALES_WEBHOOK_ALLOW_HTTP = True
    httpserver.expect_request(HOOK, method="POST").respond_with_data("ok")
    url = f"http://127.0.0.1:{httpserver.port}{HOOK}"
    with pytest.raises(PermanentActionError, match="a loopback address"):
        post(url)
    with pytest.raises(PermanentActionError, match="names localhost"):
        post(httpserver.url_for(HOOK))
    assert httpserver.log == []
    # Not a health signal: the receiver's breaker counted nothing.
    assert breakers.breaker_for(webhook.breaker_name(url)).snapshot()["calls"] == 0

    settings.SALES_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    assert post(url).status_code == 200
    assert len(httpserver.log) == 1


def test_plain_http_only_with_the_setting(nothing_allowed, httpserver):
    settings = nothing_allowed
    settings.SALES_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    httpserver.expect_request(HOOK, method="POST").respond_with_data("ok")
    url = f"http://127.0.0.1:{httpserver.port}{HOOK}"
    with pytest.raises(PermanentActionError, match="must be https"):
        post(url)
    with pytest.raises(ValidationError, match="must be https"):
        validate_sales_webhook_url(url)
    assert httpserver.log == []
    settings.SALES_WEBHOOK_ALLOW_HTTP = True
    assert post(url).status_code == 200


def test_credentials_in_the_url_are_refused_by_the_form_without_being_echoed(settings):
    settings.SALES_WEBHOOK_ALLOWED_HOSTS = []
    with pytest.raises(ValidationError) as caught:
        validate_sales_webhook_url("https://ops:pa55word-9x@crm.example.com/hook")
    assert "credentials" in str(caught.value) and "pa55word-9x" not in str(caught.value)


def test_the_connection_goes_to_the_checked_address_not_to_a_second_lookup(settings, httpserver, monkeypatch):
    """DNS rebinding: the name resolves to an allowed address when checked, to another when
    asked again. The call must go to the checked address (and still say the name in Host)."""
    settings.SALES_WEBHOOK_ALLOWED_HOSTS = ["crm.rebind.test"]
    real = socket.getaddrinfo
    lookups = []

    def resolver(host, port, *args, **kwargs):
        if host == "crm.rebind.test":
            lookups.append(host)
            # First the local server; on any later lookup an address where nothing listens.
            address = "127.0.0.1" if len(lookups) == 1 else "127.0.0.3"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    httpserver.expect_request(HOOK, method="POST").respond_with_data("ok")
    assert post(f"http://crm.rebind.test:{httpserver.port}{HOOK}").status_code == 200
    [(request, _)] = httpserver.log
    assert request.headers["Host"] == f"crm.rebind.test:{httpserver.port}"
    assert lookups == ["crm.rebind.test"]


# --- Breaker names -----------------------------------------------------------------------


def test_breakers_are_named_by_scheme_host_and_port_only(httpserver):
    httpserver.expect_request("/path/T0KEN-b7", method="POST").respond_with_data("down", status=503)
    url = f"http://ops:pw-77aa@127.0.0.1:{httpserver.port}/path/T0KEN-b7?api_key=QKEY-b7"
    with pytest.raises(RetryableActionError) as caught:
        post(url)
    name = f"webhook:http://127.0.0.1:{httpserver.port}"
    assert webhook.breaker_name(url) == name
    assert webhook.breaker_name("https://crm.example.com/x?y=1") == "webhook:https://crm.example.com:443"
    names = [snap["name"] for snap in breakers.all_breakers()]
    assert name in names
    text = json.dumps([breakers.all_breakers(), str(caught.value)], default=str)
    for secret in ("pw-77aa", "T0KEN-b7", "QKEY-b7"):
        assert secret not in text
    [(request, _)] = httpserver.log  # it did reach the receiver, credentials as Basic auth
    assert request.authorization.username == "ops" and request.args["api_key"] == "QKEY-b7"


# --- The response cap ----------------------------------------------------------------------


def test_an_answer_larger_than_the_cap_is_refused_unread(settings, httpserver):
    settings.SALES_WEBHOOK_MAX_RESPONSE_BYTES = 2048
    httpserver.expect_ordered_request(HOOK, method="POST").respond_with_data("x" * 2048)
    httpserver.expect_ordered_request(HOOK, method="POST").respond_with_data("x" * 5000)
    assert post(httpserver.url_for(HOOK)).status_code == 200  # exactly the cap is fine
    with pytest.raises(PermanentActionError, match="more than 2048 bytes"):
        post(httpserver.url_for(HOOK))


def test_an_undeclared_endless_body_is_cut_at_the_cap(settings):
    """No Content-Length, chunked, and more chunks than anyone should send: read up to the cap, then refused."""
    settings.SALES_WEBHOOK_MAX_RESPONSE_BYTES = 4096
    chunk = b"%x\r\n%s\r\n" % (1000, b"y" * 1000)
    server = DripServer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", chunk * 5000, interval=0)
    with pytest.raises(PermanentActionError, match="more than 4096 bytes"):
        post(server.url)
    wait_until(server.cut_off.is_set, timeout=10, message="the client to stop reading")
    assert not server.finished.is_set()


# --- The total deadline -----------------------------------------------------------------------


class DripServer:
    """A raw HTTP server on 127.0.0.1 for one connection: it reads the request, sends `head`
    at once, then `drip` one chunk at a time, `interval` seconds apart. It notes whether the
    client went away before the end (cut_off) or took it all (finished)."""

    def __init__(self, head: bytes, drip: bytes | list[bytes], *, interval: float, step: int = 1) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}{HOOK}"
        self.head = head
        self.pieces = [drip[i : i + step] for i in range(0, len(drip), step)] if isinstance(drip, bytes) else drip
        self.interval = interval
        self.cut_off = threading.Event()
        self.finished = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, self.listener:
            conn.settimeout(30)
            received = b""
            while b"\r\n\r\n" not in received:
                received += conn.recv(65536)
            try:
                conn.sendall(self.head)
                for piece in self.pieces:
                    conn.sendall(piece)
                    if self.interval:
                        time.sleep(self.interval)
            except OSError:
                self.cut_off.set()
                return
            self.finished.set()


def test_a_server_dripping_its_headers_is_cut_off_at_the_deadline(settings):
    settings.SALES_WEBHOOK_DEADLINE_SECONDS = 1.0
    # Every byte comes well within any read timeout; all of them would take about 30 s.
    server = DripServer(
        b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"a" * 600 + b"\r\nContent-Length: 2\r\n\r\nok", interval=0.05
    )
    with pytest.raises(RetryableActionError, match=r"timed out: no complete answer within 1 s"):
        post(server.url)
    wait_until(server.cut_off.is_set, timeout=10, message="the client to hang up on the dripping server")
    assert not server.finished.is_set()


def test_a_server_dripping_its_body_is_cut_off_at_the_deadline(settings):
    settings.SALES_WEBHOOK_DEADLINE_SECONDS = 1.0
    server = DripServer(b"HTTP/1.1 200 OK\r\nContent-Length: 600\r\n\r\n", b"z" * 600, interval=0.05)
    with pytest.raises(RetryableActionError, match=r"no complete answer within 1 s"):
        post(server.url)
    wait_until(server.cut_off.is_set, timeout=10, message="the client to hang up on the dripping server")
    assert not server.finished.is_set()


def test_a_quick_answer_is_not_disturbed_by_the_deadline(settings):
    settings.SALES_WEBHOOK_DEADLINE_SECONDS = 5.0
    server = DripServer(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n", b"ok", interval=0)
    assert post(server.url).status_code == 201
    wait_until(server.finished.is_set, timeout=10, message="the server to finish")


# --- The timestamped signature ------------------------------------------------------------------


def receiver_verdict(headers, body: bytes, secret: str, now: float, tolerance: float = 300) -> tuple[int, str]:
    """What docs/integrating/sales-webhooks.md tells a receiver to do, written independently of our client."""
    fields = dict(item.split("=", 1) for item in headers.get("X-Signature", "").split(",") if "=" in item)
    if "t" not in fields or "v1" not in fields:
        return 400, "no signature"
    if abs(now - int(fields["t"])) > tolerance:
        return 401, "timestamp outside the tolerance"
    expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, fields["v1"]):
        return 401, "bad signature"
    return 200, "ok"


def test_a_receiver_checks_the_timestamped_signature_and_refuses_a_replay(httpserver):
    clock = {"offset": 0.0}  # the receiver's clock, moved on purpose to stand for "later"
    verdicts = []

    def receiver(request: Request) -> Response:
        status, why = receiver_verdict(request.headers, request.get_data(), SECRET, time.time() + clock["offset"])
        verdicts.append(why)
        return Response(why, status=status)

    httpserver.expect_request(HOOK, method="POST").respond_with_handler(receiver)
    assert (
        post(httpserver.url_for(HOOK), {"type": "notification", "lead_id": "lead-1"}, secret=SECRET).status_code == 200
    )
    [(captured, _)] = httpserver.log
    header, body = captured.headers["X-Signature"], captured.get_data()
    assert webhook.verify(header, body, SECRET)
    replay = {
        "Content-Type": "application/json",
        "X-Signature": header,
        "Idempotency-Key": captured.headers["Idempotency-Key"],
    }

    # The same bytes sent again now still pass (the Idempotency-Key is what drops them)...
    assert requests.post(httpserver.url_for(HOOK), data=body, headers=replay, timeout=5).status_code == 200
    # ...a tampered body does not...
    tampered = body.replace(b"lead-1", b"lead-2")
    assert requests.post(httpserver.url_for(HOOK), data=tampered, headers=replay, timeout=5).status_code == 401
    # ...and ten minutes later the captured request is refused.
    clock["offset"] = 600.0
    assert requests.post(httpserver.url_for(HOOK), data=body, headers=replay, timeout=5).status_code == 401
    assert verdicts == ["ok", "ok", "bad signature", "timestamp outside the tolerance"]
    timestamp = int(header.split(",")[0][2:])
    assert not webhook.verify(header, body, SECRET, now=timestamp + 301)
    assert not webhook.verify(header, tampered, SECRET)


def test_a_signed_retry_carries_a_fresh_timestamp(httpserver):
    httpserver.expect_ordered_request(HOOK, method="POST").respond_with_data("busy", status=503)
    httpserver.expect_ordered_request(HOOK, method="POST").respond_with_data("ok")
    with pytest.raises(RetryableActionError, match="503"):
        post(httpserver.url_for(HOOK), secret=SECRET)
    time.sleep(1.1)  # so the second attempt falls in another second
    post(httpserver.url_for(HOOK), secret=SECRET)
    first, second = (r.headers["X-Signature"] for r, _ in httpserver.log)
    assert first.split(",")[0] != second.split(",")[0]
    assert all(
        webhook.verify(h, r.get_data(), SECRET) for h, (r, _) in zip((first, second), httpserver.log, strict=False)
    )


# --- No transaction open during the POST ---------------------------------------------------------
