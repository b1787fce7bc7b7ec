"""Choosing the handler for a message.

Routing lives here rather than in each handler so that the rules for sending a message to
human review (unknown intent, low confidence, nothing able to handle it) are stated once
and cannot drift between handlers.
"""

from __future__ import annotations

from typing import TypeVar

from core.registry import Registry
from whatsapp.contracts.result import Intent
from whatsapp.handlers import opt_out
from whatsapp.handlers.base import HandlerResult, IntentHandler, MessageContext

FALLBACK = "fallback"

handlers: Registry[IntentHandler] = Registry("intent handler")

H = TypeVar("H", bound=type[IntentHandler])


def register(cls: H) -> H:
    """Class decorator: register a handler under its own `name`, so the name is written once."""
    handlers.register(cls.name)(cls)
    return cls


def candidates(intent: Intent) -> list[IntentHandler]:
    """Handlers for an intent, best first. Ties go by name so the choice never depends on
    import order."""
    found = [handler for handler in handlers if handler.intent == intent and handler.name != FALLBACK]
    return sorted(found, key=lambda handler: (-handler.priority, handler.name))


def select(context: MessageContext) -> IntentHandler:
    """The highest-priority handler that can act on this message, or the fallback.

    A message below its business's confidence threshold never reaches an acting handler,
    whatever its entities say: acting on a misread intent (an order nobody placed) costs more
    than a person reading it.
    """
    fallback = handlers.get(FALLBACK)
    if context.event.intent is Intent.UNKNOWN or context.below_threshold:
        return fallback
    for handler in candidates(context.event.intent):
        if handler.can_handle(context):
            return handler
    return fallback


def plan(context: MessageContext) -> HandlerResult:
    """An opt-out or opt-in keyword first (whatever the intent), else the selected handler's plan."""
    return opt_out.plan(context) or select(context).handle(context)
