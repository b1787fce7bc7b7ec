"""Loading what a setting names by dotted path, through the modules that moved last release.

Settings such as DLQ_REQUEUE_HANDLER and METRICS_COLLECTORS name their targets by dotted path
(Django's import_string). When an app moves a module it registers the old module path here
(the whatsapp app does, in its AppConfig.ready), so a deployment's settings that still name
the old path keep loading for one release, and `manage.py check` warns (whatsapp.W001) with
the new path to write instead. Written here because import_string has no notion of a rename,
and the DLQ and the metrics must not import the app that moved."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from django.utils.module_loading import import_string

_moved: dict[str, str] = {}


def register_moves(moves: Mapping[str, str]) -> None:
    """Old module path -> new module path, e.g. "whatsapp.requeue" -> "whatsapp.recovery.requeue"."""
    _moved.update(moves)


def current(path: str) -> str:
    """The path as it would be now: the longest moved module prefix replaced, the rest kept."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in _moved:
            return ".".join([_moved[prefix], *parts[cut:]])
    return path


def import_path(path: str) -> Any:
    """import_string of the path, or of its new spelling when only the new one imports (an
    old package path can be a new package's prefix: whatsapp.ingest is one of each)."""
    try:
        return import_string(path)
    except ImportError:
        now = current(path)
        if now == path:
            raise
        try:
            return import_string(now)
        except ImportError:
            pass
        raise


def moved_paths(value: Any) -> Iterator[tuple[str, str]]:
    """(old, new) for every string in a setting's value (a string, or a list or tuple of
    them, or a dict's values) that names a moved module by its old path."""
    if isinstance(value, str):
        now = current(value)
        if now != value and _imports(now) and not _imports(value):
            yield value, now
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from moved_paths(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from moved_paths(item)


def _imports(path: str) -> bool:
    try:
        import_string(path)
    except ImportError:
        return False
    return True
