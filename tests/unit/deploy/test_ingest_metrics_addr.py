"""Ingest's /metrics listens on the address set (INGEST_METRICS_ADDR). (The web
process behind a TLS proxy: tests/integration/test_deploy.py.)"""

from __future__ import annotations

import pytest
import requests

from devtools.services import free_port


@pytest.mark.parametrize("addr", ["127.0.0.1", "0.0.0.0"])
def test_ingest_metrics_listen_on_the_address_set(addr):
    """ingest_kafka serves its counters on INGEST_METRICS_ADDR:INGEST_METRICS_PORT (the default,
    127.0.0.1, is checked in test_settings.py)."""
    from core.metrics.serving import serve_ingest

    port = free_port()
    server = serve_ingest(port, addr)
    try:
        assert server.server_address[:2] == (addr, port)
        scrape = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert scrape.status_code == 200 and "# TYPE whatsapp_messages_received_total counter" in scrape.text
    finally:
        server.shutdown()
        server.server_close()
