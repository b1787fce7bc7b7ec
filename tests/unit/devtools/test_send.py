"""`make send` refuses clearly instead of posting into a stack that cannot take the sample stream."""

from __future__ import annotations

import pytest

from devtools import send

pytestmark = pytest.mark.django_db


@pytest.fixture
def stack_env(monkeypatch):
    for name, value in {
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/unused",
        "SECRET_KEY": "x" * 50,
        "WHATSAPP_APP_SECRET": "app-secret",
        "STACK_STAND_IN_URL": "http://127.0.0.1:9",
    }.items():
        monkeypatch.setenv(name, value)


def test_without_the_stacks_settings_it_says_to_run_it_as_make_send(monkeypatch, capsys):
    monkeypatch.delenv("WHATSAPP_APP_SECRET", raising=False)
    assert send.main([]) == 2
    assert "WHATSAPP_APP_SECRET not set" in capsys.readouterr().err


def test_a_stack_replying_through_the_real_cloud_api_is_not_sent_to(stack_env, monkeypatch, capsys):
    monkeypatch.delenv("STACK_STAND_IN_URL")
    assert send.main([]) == 2
    assert "real WhatsApp Cloud API" in capsys.readouterr().err


def test_without_a_business_on_the_test_number_it_names_the_fix(stack_env, capsys):
    assert send.main([]) == 1
    err = capsys.readouterr().err
    assert "106540352242922" in err and "--sample-business" in err
