"""The action executors by saga step name.

Importing this module imports whatsapp.actions first, and that package imports every
executor module, so the registry is complete whichever of the two a caller names.
"""

from __future__ import annotations

from typing import TypeVar

from core.registry import Registry
from whatsapp.actions.base import ActionExecutor

executors: Registry[ActionExecutor] = Registry[ActionExecutor]("action executor")

E = TypeVar("E", bound=type[ActionExecutor])


def register(cls: E) -> E:
    """Class decorator: register an executor under its own `name`, so the name is written
    once, in the class, and the saga step, the registry and the plans all read it there."""
    executors.register(cls.name)(cls)
    return cls


def get(name: str) -> ActionExecutor:
    """The executor for a planned action name; LookupError names the known ones."""
    return executors.get(name)
