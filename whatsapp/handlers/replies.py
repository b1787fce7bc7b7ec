"""Every customer-facing sentence, one dict per language.

Kept in one place so a translator edits a single file, and so a review can see at a glance
that no template has a slot for the customer's own words. Slots are filled only with the
business's name, catalog data, numbers and dates. Every language must define every key;
tests check that, and `render` falls back to English for a language we do not speak.
"""
from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

DEFAULT_LANGUAGE = "en"

REPLIES: dict[str, dict[str, str]] = {
    "en": {
        "order_confirmed": "Thanks for your order with {business}!\n{lines}\nTotal: {total}\nWe'll let you know when it's ready.",
        "order_line": "- {quantity} x {name}: {amount}",
        "order_review": "Thanks for your order request with {business}! A member of our team will confirm your order with you shortly.",
        "pricing_intro": "Here are the prices at {business}:",
        "price_line": "{name}: {price}",
        "not_in_catalog": "{name}: not in our catalog",
        "availability_intro": "Here's what {business} has right now:",
        "in_stock": "{name}: in stock ({count} available)",
        "out_of_stock": "{name}: out of stock",
        "complaint": "We're very sorry about this. We've opened a support ticket and the {business} team will look into it.",
        "complaint_urgent": "We're very sorry about this. We've opened a support ticket marked as urgent, and the {business} team will contact you as soon as possible.",
        "call_scheduled": "Great! {business} will call you on {date} at {time} ({offset}).",
        "fallback": "Thanks for your message! A member of our team will get back to you shortly.",
    },
    "es": {
        "order_confirmed": "¡Gracias por tu pedido en {business}!\n{lines}\nTotal: {total}\nTe avisaremos cuando esté listo.",
        "order_line": "- {quantity} x {name}: {amount}",
        "order_review": "¡Gracias por tu pedido en {business}! Una persona de nuestro equipo te confirmará el pedido en breve.",
        "pricing_intro": "Estos son los precios en {business}:",
        "price_line": "{name}: {price}",
        "not_in_catalog": "{name}: no está en nuestro catálogo",
        "availability_intro": "Esto es lo que {business} tiene ahora mismo:",
        "in_stock": "{name}: disponible ({count} en existencia)",
        "out_of_stock": "{name}: agotado",
        "complaint": "Sentimos mucho lo ocurrido. Hemos abierto un ticket de soporte y el equipo de {business} lo revisará.",
        "complaint_urgent": "Sentimos mucho lo ocurrido. Hemos abierto un ticket de soporte marcado como urgente y el equipo de {business} se pondrá en contacto contigo lo antes posible.",
        "call_scheduled": "¡Perfecto! {business} te llamará el {date} a las {time} ({offset}).",
        "fallback": "¡Gracias por tu mensaje! Una persona de nuestro equipo te responderá en breve.",
    },
    "pt": {
        "order_confirmed": "Obrigado pelo seu pedido em {business}!\n{lines}\nTotal: {total}\nAvisaremos quando estiver pronto.",
        "order_line": "- {quantity} x {name}: {amount}",
        "order_review": "Obrigado pelo seu pedido em {business}! Uma pessoa da nossa equipe vai confirmar o pedido com você em breve.",
        "pricing_intro": "Estes são os preços de {business}:",
        "price_line": "{name}: {price}",
        "not_in_catalog": "{name}: não está no nosso catálogo",
        "availability_intro": "Veja o que {business} tem agora:",
        "in_stock": "{name}: disponível ({count} em estoque)",
        "out_of_stock": "{name}: esgotado",
        "complaint": "Sentimos muito pelo ocorrido. Abrimos um chamado de suporte e a equipe de {business} vai analisar o caso.",
        "complaint_urgent": "Sentimos muito pelo ocorrido. Abrimos um chamado de suporte marcado como urgente e a equipe de {business} entrará em contato com você o quanto antes.",
        "call_scheduled": "Perfeito! {business} vai ligar para você em {date} às {time} ({offset}).",
        "fallback": "Obrigado pela sua mensagem! Uma pessoa da nossa equipe responderá em breve.",
    },
}

# Entity names are AI output rather than catalog data; cap them so an odd extraction cannot
# turn a reply into a wall of text.
_MAX_ECHOED_NAME = 60


def language_for(tag: str | None) -> str:
    """The reply language for a BCP-47 tag: its primary subtag if we have it, else English."""
    primary = (tag or "").split("-", 1)[0].strip().lower()
    return primary if primary in REPLIES else DEFAULT_LANGUAGE


def render(tag: str | None, key: str, **values: object) -> str:
    templates = REPLIES[language_for(tag)]
    return templates.get(key, REPLIES[DEFAULT_LANGUAGE][key]).format(**values)


def money(amount: Decimal, currency: str) -> str:
    """Two decimals and the currency code ("12.50 USD"); Decimal all the way, never float."""
    return f"{format(amount.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP), 'f')} {currency}"


def echoed_name(name: str) -> str:
    """A requested product name fit to repeat back: one line, bounded length."""
    flat = " ".join(name.split())
    return flat if len(flat) <= _MAX_ECHOED_NAME else flat[: _MAX_ECHOED_NAME - 1] + "…"


def when(moment: datetime) -> dict[str, str]:
    """Date, time and UTC offset as the customer gave them, not converted to our zone,
    because the customer thinks in their own clock."""
    offset = moment.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return {"date": moment.date().isoformat(), "time": moment.strftime("%H:%M"), "offset": f"UTC{sign}{hours:02d}:{mins:02d}"}
