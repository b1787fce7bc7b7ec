"""`make up`'s first-minute setup, without starting the stack: replies go to the stand-in only
when no token is set, and var/stack/env holds the stack's settings for a shell, readable by
its owner alone."""

from __future__ import annotations

import os
import stat
import subprocess

import requests

from devtools import stack


def test_with_a_token_replies_go_to_the_real_cloud_api(monkeypatch):
    monkeypatch.setenv("WHATSAPP_ACCESS_TOKEN", "EAAG-real-token")
    monkeypatch.setenv("WHATSAPP_GRAPH_BASE_URL", "set-by-the-test")
    monkeypatch.delenv("WHATSAPP_GRAPH_BASE_URL")
    assert stack.start_stand_in() is None
    assert "WHATSAPP_GRAPH_BASE_URL" not in os.environ and os.environ["WHATSAPP_ACCESS_TOKEN"] == "EAAG-real-token"


def test_without_a_token_replies_go_to_the_stand_in_which_answers_like_the_cloud_api(monkeypatch):
    # Set, then removed: monkeypatch puts back whatever was there, and the stand-in's values go.
    for name in ("WHATSAPP_ACCESS_TOKEN", "STACK_STAND_IN_URL"):
        monkeypatch.setenv(name, "set-by-the-test")
        monkeypatch.delenv(name)
    monkeypatch.setenv("WHATSAPP_GRAPH_BASE_URL", "https://graph.facebook.com")
    stand_in = stack.start_stand_in()
    assert stand_in is not None
    try:
        assert os.environ["WHATSAPP_GRAPH_BASE_URL"] == os.environ["STACK_STAND_IN_URL"] == stand_in.url
        sent = requests.post(
            f"{stand_in.url}/v21.0/106540352242922/messages",
            json={"messaging_product": "whatsapp", "to": "15550100001", "type": "text", "text": {"body": "Hi"}},
            headers={"Authorization": f"Bearer {os.environ['WHATSAPP_ACCESS_TOKEN']}"},
            timeout=5,
        )
        assert sent.status_code == 200
        assert sent.json()["messages"][0]["id"] == stand_in.sent()[0].wamid
        assert [(r.to, r.text) for r in stand_in.sent()] == [("15550100001", "Hi")]
    finally:
        stand_in.stop()


def test_the_env_file_is_private_and_sources_back_to_the_same_values(tmp_path, monkeypatch):
    tricky = 'k3y\'with "quotes" $and `ticks`'
    monkeypatch.setenv("SECRET_KEY", tricky)
    monkeypatch.setenv("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/whatsapp_handler")
    path = stack.write_env_file(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    shell = subprocess.run(
        ["sh", "-c", f'. "{path}" && printf "%s\\n%s" "$SECRET_KEY" "$DATABASE_URL"'],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout.split("\n") == [tricky, "postgres://postgres@127.0.0.1:5432/whatsapp_handler"]
