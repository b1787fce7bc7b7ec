"""The action executors by saga step name.

Importing this module imports whatsapp.actions first, and that package imports every
executor module, so the registry is complete whichever of the two a caller names.
"""
from __future__ import annotations

from whatsapp.actions.base import ActionExecutor
from core.registry import Registry

executors: Registry[ActionExecutor] = Registry[ActionExecutor]("action executor")


def get(name: str) -> ActionExecutor:
    """The executor for a planned action name; LookupError names the known ones."""
    return executors.get(name)
