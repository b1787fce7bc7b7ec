"""Opt-out keywords: what counts as STOP or START (the whole text, case, accents, spaces and
punctuation forgiven), which language the confirmation takes, and the plan before any intent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import whatsapp.handlers  # noqa: F401  (registers every handler)
from leads.models import Lead
from tests.support.events import encode, event, now_iso
from whatsapp.contracts.result import parse_event
from whatsapp.handlers import opt_out
from whatsapp.handlers.base import MessageContext
from whatsapp.handlers.registry import plan

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "text, change, language",
    [
        ("STOP", opt_out.OPT_OUT, "en"),
        ("stop", opt_out.OPT_OUT, "en"),
        ("  Stop!!  ", opt_out.OPT_OUT, "en"),
        ("Unsubscribe.", opt_out.OPT_OUT, "en"),
        ("stop   all", opt_out.OPT_OUT, "en"),
        ("baja", opt_out.OPT_OUT, "es"),
        ("¡Baja!", opt_out.OPT_OUT, "es"),
        ("cancelar suscripcion", opt_out.OPT_OUT, "es"),
        ("CANCELAR SUSCRIPCIÓN", opt_out.OPT_OUT, "es"),
        ("Sair", opt_out.OPT_OUT, "pt"),
        ("cancelar", opt_out.OPT_OUT, "pt"),
        ("START", opt_out.OPT_IN, "en"),
        ("alta", opt_out.OPT_IN, "es"),
        ("Empezar.", opt_out.OPT_IN, "es"),
        ("começar", opt_out.OPT_IN, "pt"),
        ("COMECAR", opt_out.OPT_IN, "pt"),
        ("voltar 👍", opt_out.OPT_IN, "pt"),
    ],
)
def test_a_whole_text_keyword_matches_whatever_its_case_accents_and_punctuation(text, change, language):
    assert opt_out.match(text) == opt_out.KeywordMatch(change=change, language=language)


@pytest.mark.parametrize(
    "text",
    [
        "stop sending me the blue one",
        "please stop",
        "2 sourdough, then STOP",
        "st op",
        "stopp",
        "",
        "!!!",
        "STOP " * 20,
    ],
)
def test_a_keyword_inside_a_longer_message_is_no_keyword(text):
    assert opt_out.match(text) is None


def test_a_keyword_in_two_languages_answers_in_the_messages_language():
    # PARAR is Spanish and Portuguese: the message's language decides, else the first listed.
    assert opt_out.match("parar", "pt-BR").language == "pt"
    assert opt_out.match("parar", "es").language == "es"
    assert opt_out.match("parar", "de").language == "es"
    assert opt_out.match("parar").language == "es"


def test_the_keywords_come_from_the_settings(settings):
    settings.WHATSAPP_OPT_OUT_KEYWORDS = {"fr": ["ARRÊT"], "en": ["HALT"]}
    settings.WHATSAPP_OPT_IN_KEYWORDS = {"fr": ["REPRISE"]}
    assert opt_out.match("arret") == opt_out.KeywordMatch(opt_out.OPT_OUT, "fr")
    assert opt_out.match("halt!") == opt_out.KeywordMatch(opt_out.OPT_OUT, "en")
    assert opt_out.match("reprise") == opt_out.KeywordMatch(opt_out.OPT_IN, "fr")
    assert opt_out.match("STOP") is None


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("{not json", "setting WHATSAPP_OPT_OUT_KEYWORDS: is not valid JSON"),
        ('["STOP"]', "setting WHATSAPP_OPT_OUT_KEYWORDS: must be a JSON object of language -> keywords"),
        ('{"en": []}', "setting WHATSAPP_OPT_OUT_KEYWORDS: 'en' must map to a non-empty list of non-empty strings"),
        ('{"en": ["STOP", " "]}', "'en' must map to a non-empty list of non-empty strings"),
    ],
)
def test_a_malformed_keyword_setting_stops_the_process_with_one_line(value, fragment):
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", SECRET_KEY="s" * 60, DEBUG="0")
    env["WHATSAPP_OPT_OUT_KEYWORDS"] = value
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert fragment in lines[0]


# --- The plan: before any intent handler --------------------------------------------------


@pytest.fixture
def context_for(business):
    lead = Lead.objects.create(lead_id="lead-optout", business=business, wa_id="15550123456")

    def make(text: str, *, intent: str = "ORDER_REQUEST", language: str | None = None) -> MessageContext:
        entities = {"products": [{"sku": "SD-01", "name": "sourdough loaf", "quantity": 2}]}
        if language:
            entities["language"] = language
        body = event(
            "proc-optout",
            intent=intent,
            confidence=0.97,
            entities=entities,
            message={"text": text, "received_at": now_iso()},
        )
        lead.refresh_from_db()
        return MessageContext(event=parse_event(encode(body)), business=business, lead=lead, catalog={})

    return make


def test_stop_opts_out_whatever_the_ai_read_into_it(context_for):
    result = plan(context_for("Stop!"))
    assert result.handler == opt_out.HANDLER and result.actions == [] and result.consent == opt_out.OPT_OUT
    assert result.reply_text == (
        "You will no longer receive automatic messages from Acme Bakery. Reply START to receive them again."
    )
    assert result.reply_kind == ""  # never a template


def test_the_confirmation_is_in_the_keywords_language(context_for):
    assert plan(context_for("baja")).reply_text.startswith("Ya no recibirás mensajes automáticos de Acme Bakery.")
    assert plan(context_for("sair", language="pt-BR")).reply_text.startswith("Você não receberá mais")


def test_stop_from_a_customer_already_out_changes_nothing_and_gets_no_reply(context_for):
    context = context_for("STOP")
    context.lead.opt_out(source="keyword")
    result = plan(context_for("STOP"))
    assert result.handler == opt_out.HANDLER and result.consent == "" and result.reply_text is None


def test_start_opts_an_opted_out_customer_back_in(context_for):
    context_for("x").lead.opt_out(source="keyword")
    result = plan(context_for("start", language="en"))
    assert result.consent == opt_out.OPT_IN
    assert result.reply_text == "You will receive messages from Acme Bakery again. Reply STOP to stop them."


def test_start_from_a_customer_who_never_opted_out_is_an_ordinary_message(context_for):
    result = plan(context_for("START", intent="UNKNOWN"))
    assert result.handler == "fallback" and result.consent == ""


def test_an_order_is_planned_as_ever_for_an_opted_out_customer(context_for):
    context_for("x").lead.opt_out(source="keyword")
    result = plan(context_for("2 sourdough please"))
    assert result.handler != opt_out.HANDLER and result.consent == ""
