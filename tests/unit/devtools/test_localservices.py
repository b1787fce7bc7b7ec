"""devtools/services' helpers that start nothing: free ports, and URLs given in
the environment used as they are. (The embedded servers themselves:
tests/integration/test_localservices.py.)"""

from __future__ import annotations

from devtools import services as ls


def test_free_port_and_port_open():
    port = ls.free_port()
    assert not ls.port_open("127.0.0.1", port, timeout=0.2)


def test_ensure_services_uses_given_urls(tmp_path, capsys):
    env = {
        "DATABASE_URL": "postgres://u@db.example:5432/x",
        "REDIS_URL": "redis://cache.example:6379/1",
        "KAFKA_BOOTSTRAP_SERVERS": "broker.example:9092",
        "WHATSAPP_EMBEDDED": "1",
    }
    settings, started = ls.ensure_services(tmp_path / "var", env=env)
    assert started == []
    assert settings == {k: env[k] for k in settings}
    assert "postgres: from DATABASE_URL" in capsys.readouterr().err
