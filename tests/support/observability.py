"""Reading what the service exposes: Prometheus text, JSON log lines, Sentry envelopes."""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """One /metrics body, parsed: samples by name, each (labels, value)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[sample.name].append((dict(sample.labels), sample.value))

    @classmethod
    def get(cls, url: str, token: str | None = None) -> Scrape:
        """Scrape as Prometheus does: with the bearer token the web's /metrics asks for."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = requests.get(url, headers=headers, timeout=20)
        response.raise_for_status()
        return cls(response.text)

    def by(self, name: str, *labels: str) -> dict[tuple[str, ...] | str, float]:
        """name's values keyed by the given labels (summed over the others); a bare key for one label."""
        out: dict[Any, float] = defaultdict(float)
        for sample_labels, value in self.samples.get(name, []):
            key = tuple(sample_labels.get(label, "") for label in labels)
            out[key[0] if len(key) == 1 else key] += value
        return {k: v for k, v in out.items() if v}

    def value(self, name: str, **labels: str) -> float:
        return sum(v for ls, v in self.samples.get(name, []) if all(ls.get(k) == w for k, w in labels.items()))


def json_lines(text: str) -> list[dict]:
    """The JSON log lines in a process's output (its other output, e.g. Celery's banner, is skipped)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


class SentryIngest:
    """A stand-in for Sentry's ingest endpoint: a real HTTP server the SDK's own transport
    sends envelopes to (DSN http://public@127.0.0.1:PORT/1), decoded into their items."""

    def __init__(self) -> None:
        self.items: list[tuple[dict, Any]] = []
        self.raw: list[bytes] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                elif encoding == "br":
                    import brotli

                    body = brotli.decompress(body)
                sink._add(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://public@127.0.0.1:{self.server.server_address[1]}/1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _add(self, body: bytes) -> None:
        items = parse_envelope(body)
        with self._lock:
            self.raw.append(body)
            self.items.extend(items)

    def transactions(self) -> list[dict]:
        with self._lock:
            return [payload for header, payload in self.items if header.get("type") == "transaction"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def parse_envelope(body: bytes) -> list[tuple[dict, Any]]:
    """Sentry's envelope format: a header line, then items of a header line and a payload
    (`length` bytes when the header says, else up to the newline)."""
    items = []
    _envelope_header, _, rest = body.partition(b"\n")
    while rest.strip():
        header_line, _, rest = rest.partition(b"\n")
        header = json.loads(header_line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"] :]
            rest = rest[1:] if rest.startswith(b"\n") else rest
        else:
            payload, _, rest = rest.partition(b"\n")
        try:
            items.append((header, json.loads(payload)))
        except ValueError:
            items.append((header, payload))
    return items
