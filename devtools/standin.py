"""A local stand-in for the WhatsApp Cloud API (and for the demo's sales CRMs).

`make demo` and `make up` without a `WHATSAPP_ACCESS_TOKEN` point `WHATSAPP_GRAPH_BASE_URL` at
it, so replies go somewhere real over HTTP instead of being dead-lettered for want of a token. It
answers a text message as the Cloud API does (a fresh `wamid` per message), a read receipt
with `{"success": true}`, and keeps what it was sent so the demo can post status webhooks for
those wamids. A path under /crm/ plays a business's CRM: /crm/acme accepts, anything else
refuses with 422.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
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


class StandInCloudApi:
    """The server and what it received; `url` is what WHATSAPP_GRAPH_BASE_URL should be."""

    def __init__(self, port: int = 0, *, echo: bool = False, threaded: bool = True) -> None:
        self.lock = threading.Lock()
        self.replies: list[SentReply] = []
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
        text = str((request.get("text") or {}).get("body", ""))
        with self.lock:
            wamid = f"wamid.standin.{len(self.replies) + 1:05d}"
            self.replies.append(SentReply(to, text, wamid, str(request.get("biz_opaque_callback_data", ""))))
        if self.echo:
            first_line = text.splitlines()[0] if text else ""
            print(f"stand-in Cloud API: reply {wamid} to {to}: {first_line[:70]}", flush=True)
        return 200, {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": wamid}],
        }

    def sent(self) -> list[SentReply]:
        with self.lock:
            return list(self.replies)
