"""A local stand-in for the WhatsApp Cloud API (and for the demo's sales CRMs).

`make demo` and `make up` without a `WHATSAPP_ACCESS_TOKEN` point `WHATSAPP_GRAPH_BASE_URL` at
it, so replies go somewhere real over HTTP instead of being dead-lettered for want of a token. It
answers a text message as the Cloud API does (a fresh `wamid` per message), a read receipt
with `{"success": true}`, and keeps what it was sent so the demo can post status webhooks for
those wamids. A `template` message (the reply once the 24-hour window has closed) is answered
the same way and kept with its name, language and body parameters (`templates()`); told to
with `refuse_template`, the stand-in answers a template by that name with Meta's Graph error
instead (132001 "Template name does not exist in the translation", 132015 paused...), in the
real error body's shape. A path under /crm/ plays a business's CRM: /crm/acme accepts,
anything else refuses with 422.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from typing import Any


class _QueuedHTTPServer(HTTPServer):
    request_queue_size = 128  # callers wait their turn in the backlog, not refused
    daemon_threads = True


@dataclass(frozen=True)
class SentReply:
    to: str
    text: str
    wamid: str
    processing_id: str


@dataclass(frozen=True)
class SentTemplate:
    """A template message the stand-in accepted: what a test or the demo checks was sent."""

    to: str
    name: str
    language: str
    # The body's parameter texts, in order ({{1}}, {{2}}... or the named ones in the order sent).
    parameters: list[str]
    wamid: str
    processing_id: str
    # Each body parameter as sent: {"type": "text", "text": ...} (with "parameter_name" when named).
    body: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class RefusedTemplate:
    """A template message the stand-in answered with a Graph error (refuse_template)."""

    to: str
    name: str
    language: str
    code: int
    processing_id: str


# Meta's titles for the template errors the stand-in can be told to answer with (Cloud API error codes).
TEMPLATE_ERRORS = {
    132000: "Number of parameters does not match the expected number of params",
    132001: "Template name does not exist in the translation",
    132005: "Translated text too long",
    132007: "Template format character policy violated",
    132012: "Parameter format does not match format in the created template",
    132015: "Template is Paused",
    132016: "Template is Disabled",
}


def graph_error(code: int, title: str, details: str, *, fbtrace_id: str = "AStandInTrace") -> dict[str, Any]:
    """The body of a Graph API error, as Meta sends it."""
    return {
        "error": {
            "message": f"(#{code}) {title}",
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": fbtrace_id,
        }
    }


class StandInCloudApi:
    """The server and what it received; `url` is what WHATSAPP_GRAPH_BASE_URL should be."""

    def __init__(self, port: int = 0, *, echo: bool = False, threaded: bool = True) -> None:
        self.lock = threading.Lock()
        self.replies: list[SentReply] = []
        self.accepted_templates: list[SentTemplate] = []
        self.refused_templates: list[RefusedTemplate] = []
        # Template name -> the Graph error code it is answered with (refuse_template).
        self.template_refusals: dict[str, int] = {}
        self.messages_sent = 0  # text and template messages: one wamid each
        self.read_receipts = 0
        self.echo = echo
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}"
                try:
                    request = json.loads(raw)
                except ValueError:
                    request = {}
                status, body = api.answer(self.path, request if isinstance(request, dict) else {})
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        # `make bench` asks for one request at a time (threaded=False): the stand-in shares the
        # machine with what is measured and should cost it as little as it can.
        self.server = (ThreadingHTTPServer if threaded else _QueuedHTTPServer)(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="stand-in-cloud-api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> StandInCloudApi:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path.startswith("/crm/"):
            if path.startswith("/crm/acme"):
                return 200, {"ok": True}
            return 422, {"error": "unknown account"}
        if not path.endswith("/messages"):
            return 404, {"error": {"message": "Unknown path", "code": 100}}
        if request.get("status") == "read":
            with self.lock:
                self.read_receipts += 1
            return 200, {"success": True}
        to = str(request.get("to", ""))
        if request.get("type") == "template":
            return self._answer_template(to, request)
        text = str((request.get("text") or {}).get("body", ""))
        with self.lock:
            wamid = self._next_wamid()
            self.replies.append(SentReply(to, text, wamid, str(request.get("biz_opaque_callback_data", ""))))
        if self.echo:
            first_line = text.splitlines()[0] if text else ""
            print(f"stand-in Cloud API: reply {wamid} to {to}: {first_line[:70]}", flush=True)
        return 200, self._accepted(to, wamid)

    def _answer_template(self, to: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A wamid for a well-formed template message, or the Graph error it was told to give."""
        raw = request.get("template")
        template: dict[str, Any] = raw if isinstance(raw, dict) else {}
        name = str(template.get("name") or "")
        language = str((template.get("language") or {}).get("code") or "")
        if not name or not language:
            return 400, graph_error(100, "Invalid parameter", "template.name and template.language.code are required")
        body: list[dict[str, Any]] = []
        for component in template.get("components") or []:
            if isinstance(component, dict) and component.get("type") == "body":
                body += [p for p in component.get("parameters") or [] if isinstance(p, dict)]
        processing_id = str(request.get("biz_opaque_callback_data", ""))
        with self.lock:
            code = self.template_refusals.get(name)
            if code is not None:
                self.refused_templates.append(RefusedTemplate(to, name, language, code, processing_id))
            else:
                wamid = self._next_wamid()
                parameters = [str(p.get("text", "")) for p in body]
                self.accepted_templates.append(SentTemplate(to, name, language, parameters, wamid, processing_id, body))
        if code is not None:
            title = TEMPLATE_ERRORS.get(code, "Template error")
            return 400, graph_error(code, title, f"template name ({name}) in language ({language}): {title}")
        if self.echo:
            print(f"stand-in Cloud API: template {name} [{language}] {wamid} to {to}", flush=True)
        return 200, self._accepted(to, wamid)

    def _next_wamid(self) -> str:
        """Called with the lock held."""
        self.messages_sent += 1
        return f"wamid.standin.{self.messages_sent:05d}"

    @staticmethod
    def _accepted(to: str, wamid: str) -> dict[str, Any]:
        return {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": wamid}],
        }

    def refuse_template(self, name: str, code: int = 132001) -> None:
        """From now on, answer a template message named `name` with Graph error `code`."""
        with self.lock:
            self.template_refusals[name] = code

    def accept_template(self, name: str) -> None:
        """Stop refusing `name` (the template was fixed at Meta)."""
        with self.lock:
            self.template_refusals.pop(name, None)

    def sent(self) -> list[SentReply]:
        """The text replies, in the order received."""
        with self.lock:
            return list(self.replies)

    def templates(self) -> list[SentTemplate]:
        """The template messages accepted, in the order received."""
        with self.lock:
            return list(self.accepted_templates)

    def refused(self) -> list[RefusedTemplate]:
        """The template messages answered with a Graph error."""
        with self.lock:
            return list(self.refused_templates)
