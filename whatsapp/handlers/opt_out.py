"""Opt-out and opt-in keywords: a message whose whole text is STOP (or BAJA, SAIR, ... per
language, settings WHATSAPP_OPT_OUT_KEYWORDS / WHATSAPP_OPT_IN_KEYWORDS) opts the customer out
of every automatic reply and template; START (ALTA, VOLTAR, ...) opts them back in.

Checked before any intent handler (whatsapp.handlers.registry.plan), whatever the AI made of
the text: a customer who writes STOP means it even when a classifier reads an order into it.
Only the whole text counts ("stop sending me the blue one" is a message, not an opt-out):
compared after trimming, folding case, dropping accents, collapsing inner spaces and dropping
punctuation at either end ("Stop!", "¡Baja!", "cancelar suscripcion" all match).

Plan: no action; lead.opt_out / lead.opt_in applied by the plan stage (whatsapp.saga.plan) in
its transaction, written to the lead's activity log; reply: one confirmation in the keyword's
language (the message's language when the keyword is in several lists, as PARAR is), sent as
plain text (never a template: inside the 24-hour window, which the customer just opened).
A keyword that changes nothing (STOP from a customer already out) gets no reply; START from a
customer who never opted out is an ordinary message for the intent handlers.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from django.conf import settings

from whatsapp.handlers import replies
from whatsapp.handlers.base import HandlerResult, MessageContext

OPT_OUT = "opt_out"
OPT_IN = "opt_in"
# The handler name on the inbox row: the send step lets this one reply through to an opted-out customer.
HANDLER = "opt_out"
# No message longer than this is read as a keyword (the longest default is 20 characters).
MAX_KEYWORD_CHARS = 64

REPLIES = replies.Replies(
    {
        "en": {
            OPT_OUT: (
                "You will no longer receive automatic messages from {business}. Reply START to receive them again."
            ),
            OPT_IN: "You will receive messages from {business} again. Reply STOP to stop them.",
        },
        "es": {
            OPT_OUT: "Ya no recibirás mensajes automáticos de {business}. Responde ALTA para volver a recibirlos.",
            OPT_IN: "Volverás a recibir mensajes de {business}. Responde BAJA para dejar de recibirlos.",
        },
        "pt": {
            OPT_OUT: "Você não receberá mais mensagens automáticas de {business}. Responda VOLTAR para recebê-las.",
            OPT_IN: "Você voltará a receber mensagens de {business}. Responda SAIR para pará-las.",
        },
    }
)


@dataclass(frozen=True)
class KeywordMatch:
    """What a message's text asks: OPT_OUT or OPT_IN, and in which language the reply goes."""

    change: str
    language: str


def normalize(text: str) -> str:
    """The text as keywords are compared: trimmed, case folded, accents dropped (NFKD without
    combining marks), inner spaces collapsed, punctuation and symbols at either end dropped."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    words = " ".join(plain.casefold().split())
    start, end = 0, len(words)
    while start < end and _edge(words[start]):
        start += 1
    while end > start and _edge(words[end - 1]):
        end -= 1
    return words[start:end]


def _edge(char: str) -> bool:
    """Punctuation, symbols (an emoji) and spaces are ignored at the ends of a keyword message."""
    return char.isspace() or unicodedata.category(char)[0] in ("P", "S")


def _table(setting: dict[str, list[str]]) -> dict[str, list[str]]:
    """normalized keyword -> the languages listing it, in the setting's order."""
    table: dict[str, list[str]] = {}
    for language, words in setting.items():
        for word in words:
            table.setdefault(normalize(word), []).append(language)
    return table


def match(text: str, language: str | None = None) -> KeywordMatch | None:
    """The opt-out or opt-in this whole text asks for, or None. Opt-out wins a word in both lists.
    `language` (the message's) picks the reply's language among those listing the keyword."""
    if not text or len(text) > MAX_KEYWORD_CHARS:
        return None
    wanted = normalize(text)
    if not wanted:
        return None
    primary = (language or "").split("-", 1)[0].split("_", 1)[0].lower()
    for change, setting in ((OPT_OUT, settings.WHATSAPP_OPT_OUT_KEYWORDS), (OPT_IN, settings.WHATSAPP_OPT_IN_KEYWORDS)):
        languages = _table(setting).get(wanted)
        if languages:
            chosen = primary if primary in languages else languages[0]
            return KeywordMatch(change=change, language=chosen)
    return None


def plan(context: MessageContext) -> HandlerResult | None:
    """The plan for a keyword message, or None for a message the intent handlers take."""
    found = match(context.event.message.text, context.event.entities.language)
    if found is None:
        return None
    opted_out = context.lead.opted_out_at is not None
    if found.change == OPT_IN and not opted_out:
        return None
    changes = (found.change == OPT_OUT) != opted_out
    reply = REPLIES.render(found.language, found.change, business=context.business.display_name) if changes else None
    return HandlerResult(
        handler=HANDLER,
        actions=[],
        reply_text=reply,
        note=f"{found.change} keyword ({found.language})" + ("" if changes else ", already so: no reply"),
        consent=found.change if changes else "",
    )
