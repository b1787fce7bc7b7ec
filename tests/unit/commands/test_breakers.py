"""`manage.py breakers`: the breakers' state in Redis, shown and steered."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from django.core.management import CommandError, call_command

from core import breakers


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("breakers", *args, stdout=out)
    return out.getvalue()


def test_show_open_close_reset_and_exit_codes():
    name = f"webhook:cmd-{uuid.uuid4().hex[:8]}.test"
    breakers.breaker_for(name).call(lambda: None)  # a call registers it

    shown = {s["name"]: s for s in json.loads(run("show", "--json"))}
    assert shown[name]["state"] == "closed" and shown[name]["calls"] == 1
    assert name in run("show", name)

    assert run("open", name).strip() == f"{name}: open (forced)"
    with pytest.raises(breakers.CircuitOpen):
        breakers.breaker_for(name).call(lambda: None)
    assert json.loads(run("show", "--json", name))[0]["forced"] is True
    assert run("close", name).strip() == f"{name}: closed"
    breakers.breaker_for(name).call(lambda: None)

    run("open", name, "--seconds", "30")
    snap = breakers.breaker_for(name).snapshot()
    assert snap["state"] == "open" and not snap["forced"] and 0 < snap["remaining"] <= 30
    assert run("reset", name).strip() == f"{name}: closed"
    assert breakers.breaker_for(name).snapshot()["calls"] == 0, "reset forgets the window"

    with pytest.raises(CommandError) as unknown:
        run("close", f"webhook:never-used-{uuid.uuid4().hex[:6]}.test")
    assert unknown.value.returncode == 1 and "no breaker named" in str(unknown.value)
    with pytest.raises(CommandError) as malformed:
        run("open", "crm.example.com")
    assert malformed.value.returncode == 2
