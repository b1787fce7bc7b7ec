"""One outbound HTTP POST (or GET) with a total deadline, a cap on the answer it reads, and an optional pinned address.

Why this is our own code: requests and urllib3 only bound each operation (the connect,
and every single socket read), so a server that sends one byte a second never trips a
read timeout and holds a worker for as long as it likes; httpx has the same model. The
clients that do have a total deadline (pycurl's CURLOPT_TIMEOUT, aiohttp's
ClientTimeout(total=...)) would replace the whole HTTP stack, or bring an event loop
into synchronous Celery tasks, for one feature. So each call runs on a fresh urllib3
connection (urllib3 stays in charge of HTTP and TLS), and a watchdog timer shuts the
socket down when the deadline passes: whatever the call is blocked on then (the TLS
handshake, sending, the status line, a header, the body) fails at once, and the failure
is reported as DeadlineExceeded. The connect itself is bounded by min(connect timeout,
deadline). Name resolution, when the caller does not pin an address, is the resolver's
own (its timeouts are short); the sales webhook always pins one.

The answer's body is read in chunks and never beyond `max_body` bytes: a larger one is
ResponseTooLarge (a declared Content-Length over the cap is refused before reading).

Pinning: the caller may pass the address it has checked (core.clients.destinations).
The TCP connection goes to that address while the Host header, TLS's server name and the
certificate check still use the host name, so a DNS answer that changes between the
check and the connect (DNS rebinding) cannot move the request elsewhere.

Errors: every failure is one of the HttpError classes below; the message names only the
destination's origin (scheme://host:port), and it is raised outside the `except` block
that caught the library's exception, so nothing from urllib3 or http.client (whose text
can carry the request path and query) is chained into a traceback that gets stored.
"""

from __future__ import annotations

import base64
import http.client
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import sentry_sdk
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError
from urllib3.exceptions import SSLError as Urllib3SSLError
from urllib3.util import connection as urllib3_connection
from urllib3.util.ssl_ import create_urllib3_context

from config.redaction import origin

CHUNK = 16384


@dataclass(frozen=True)
class Limits:
    connect_timeout: float
    read_timeout: float  # each socket read; the deadline bounds their sum
    deadline: float  # the whole call: connect, TLS, send, status line, headers, body
    max_body: int  # bytes of the answer's body read at most


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


class HttpError(Exception):
    """No complete answer came back. `sent` is False only when the request certainly never
    reached the server (it was never connected), so a non-idempotent caller may send again."""

    sent = True

    def __init__(self, message: str, *, sent: bool | None = None, status: int | None = None) -> None:
        super().__init__(message)
        if sent is not None:
            self.sent = sent
        self.status = status


class InvalidURL(HttpError):
    sent = False


class NotConnected(HttpError):
    """Name resolution, the TCP connect or the TLS handshake failed: nothing was sent."""

    sent = False


class ConnectTimedOut(NotConnected):
    pass


class ReadTimedOut(HttpError):
    """A single read waited longer than the read timeout, after the request went out."""


class DeadlineExceeded(HttpError):
    """The whole call took longer than the deadline (sent says whether it got as far as sending)."""


class ConnectionDropped(HttpError):
    """The connection broke, or the answer was not HTTP, after the request went out."""


class ResponseTooLarge(HttpError):
    """The answer's body is larger than the cap; `status` is the status line's code."""


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    limits: Limits,
    *,
    address: str | None = None,
    ca_bundle: str | None = None,
) -> Answer:
    """POST body to url and return the whole answer, or raise an HttpError.

    Redirects are not followed (a 3xx is returned like any other answer). Userinfo in
    the URL becomes an HTTP Basic Authorization header, as requests does. The call is a
    Sentry span named by the destination's origin (sentry-sdk's own http.client span,
    which names the path and query, is turned off in core/tracing.py).
    """
    where = origin(url)
    with sentry_sdk.start_span(op="http.client", name=f"POST {where}") as span:
        span.set_data("http.request.method", "POST")
        answer = _post(url, where, body, headers, limits, address, ca_bundle)
        span.set_data("http.response.status_code", answer.status)
        return answer


def get(url: str, headers: dict[str, str], limits: Limits, *, ca_bundle: str | None = None) -> Answer:
    """GET url under the same bounds and errors as post (the Graph API's template listing)."""
    where = origin(url)
    with sentry_sdk.start_span(op="http.client", name=f"GET {where}") as span:
        span.set_data("http.request.method", "GET")
        answer = _post(url, where, None, headers, limits, None, ca_bundle, method="GET")
        span.set_data("http.response.status_code", answer.status)
        return answer


def _post(
    url: str,
    where: str,
    body: bytes | None,
    headers: dict[str, str],
    limits: Limits,
    address: str | None,
    ca_bundle: str | None,
    method: str = "POST",
) -> Answer:
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:
        raise InvalidURL(f"{where}: not a valid URL") from None
    if scheme not in ("http", "https") or not host:
        raise InvalidURL(f"{where}: only http and https URLs with a host can be called")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = dict(headers)
    if parts.username is not None and not any(name.lower() == "authorization" for name in headers):
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")

    deadline_at = time.monotonic() + limits.deadline
    watchdog = _Watchdog(limits.deadline)
    options: dict = {"ssl_context": _tls_context(ca_bundle)} if scheme == "https" else {}
    connection_class = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(
        host, port, timeout=min(limits.connect_timeout, limits.deadline), address=address, watchdog=watchdog, **options
    )
    phase = "connect"
    failure: HttpError | None = None
    watchdog.start()
    try:
        connection.connect()
        phase = "send"
        connection.timeout = max(0.001, min(limits.read_timeout, deadline_at - time.monotonic()))
        connection.request(method, target, body=body, headers=headers, preload_content=False, decode_content=False)
        phase = "answer"
        response = connection.getresponse()
        status = response.status
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_body:
            raise ResponseTooLarge(
                f"{where} answered HTTP {status} with a body of {declared} bytes, "
                f"more than the {limits.max_body} read at most",
                status=status,
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = response.read(min(CHUNK, limits.max_body + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limits.max_body:
                raise ResponseTooLarge(
                    f"{where} answered HTTP {status} with a body of more than {limits.max_body} bytes", status=status
                )
            if time.monotonic() >= deadline_at:
                raise DeadlineExceeded(f"{where} did not finish answering within {limits.deadline:g} s", status=status)
        watchdog.cancel()
        if watchdog.fired:
            # The shutdown reads as an end of file, so a cut-off answer can look whole
            # (http.client takes EOF for the end of the headers, or of an unsized body).
            raise DeadlineExceeded(f"{where} did not answer within {limits.deadline:g} s")
        return Answer(status=status, headers={k.lower(): v for k, v in response.headers.items()}, body=b"".join(chunks))
    except HttpError as exc:
        failure = exc
    except Exception as exc:  # classified below, outside this block, so the library's exception is not chained
        failure = _classify(exc, phase, watchdog.fired, where, limits)
    finally:
        watchdog.cancel()
        connection.close()
    raise _unchained(failure)


def _unchained(failure: HttpError) -> HttpError:
    failure.__context__ = None
    failure.__cause__ = None
    failure.__suppress_context__ = True
    return failure


def _classify(exc: BaseException, phase: str, deadline_passed: bool, where: str, limits: Limits) -> HttpError:
    kind = type(exc).__name__
    if deadline_passed:
        return DeadlineExceeded(f"{where} did not answer within {limits.deadline:g} s", sent=phase != "connect")
    if phase == "connect":
        if isinstance(exc, socket.gaierror):
            return NotConnected(f"{where}: the host name could not be resolved")
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return ConnectTimedOut(
                f"{where}: connect timed out after {min(limits.connect_timeout, limits.deadline):g} s"
            )
        if isinstance(exc, (ssl.SSLError, ssl.CertificateError, Urllib3SSLError)):
            return NotConnected(f"{where}: the TLS handshake failed ({kind})")
        return NotConnected(f"{where}: could not connect ({kind})")
    if isinstance(exc, (socket.timeout, TimeoutError, ReadTimeoutError)):
        return ReadTimedOut(f"{where}: read timed out after {limits.read_timeout:g} s")
    if isinstance(exc, (http.client.HTTPException, Urllib3Error, OSError, ValueError)):
        return ConnectionDropped(f"{where}: the connection broke or the answer was not valid HTTP ({kind})")
    return ConnectionDropped(f"{where}: the call failed ({kind})")


@lru_cache(maxsize=8)
def _tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """One verifying context per CA bundle, made once: loading a bundle costs more than a request.
    Default: certifi's bundle, as requests uses."""
    if ca_bundle is None:
        import certifi

        ca_bundle = certifi.where()
    context = create_urllib3_context()  # certificate and host name checked
    context.load_verify_locations(cafile=ca_bundle)
    return context


class _Watchdog:
    """Shuts the call's socket down (both directions) when the deadline passes.

    shutdown() wakes a thread blocked in recv/send/handshake on that socket, which
    close() from another thread does not. It acts on a dup of the descriptor, and only
    if the descriptor still leads to the peer it was attached with, so a descriptor
    number reused after the connection closed is never touched.
    """

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._peer: object = None
        self._done = False
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def attach(self, sock: socket.socket) -> None:
        try:
            peer = sock.getpeername()
        except OSError:
            peer = None
        with self._lock:
            self._fd, self._peer = sock.fileno(), peer
            fired = self.fired
        if fired:
            self._shut()

    def cancel(self) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
        self._shut()

    def _shut(self) -> None:
        with self._lock:
            if self._done or self._fd is None or self._fd < 0:
                return
            try:
                duplicate = socket.socket(fileno=os.dup(self._fd))
            except OSError:
                return
            try:
                if duplicate.getpeername() == self._peer:
                    duplicate.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            finally:
                duplicate.close()


if TYPE_CHECKING:
    # What the mixin below is mixed into: it reads the connection's host, port and options.
    _ConnectionBase = HTTPConnection
else:
    _ConnectionBase = object


class _Pinned(_ConnectionBase):
    """Connects to `address` when given (else resolves the host), and hands the socket to the watchdog."""

    def __init__(self, *args: Any, address: str | None = None, watchdog: _Watchdog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pinned_address = address
        self._watchdog = watchdog

    def _new_conn(self) -> socket.socket:
        sock = urllib3_connection.create_connection(
            (self._pinned_address or self._dns_host, self.port),
            self.timeout,
            source_address=self.source_address,
            socket_options=self.socket_options,
        )
        self._watchdog.attach(sock)
        return sock


class _PinnedHTTPConnection(_Pinned, HTTPConnection):
    pass


class _PinnedHTTPSConnection(_Pinned, HTTPSConnection):
    pass
