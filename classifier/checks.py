"""A wrong `CLASSIFIER_BACKEND` is found by `manage.py check` (and at every command's start),
not by the first request the classifier process reads."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, register

from classifier.backends.base import backend_class, configured_path


@register()
def check_backend(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    path = configured_path()
    try:
        backend_class(path)
    except ImportError as exc:
        return [
            Error(
                f"CLASSIFIER_BACKEND {path!r} cannot be imported: {exc}",
                hint="Name a class by its dotted path, e.g. classifier.reference.ReferenceClassifier.",
                id="classifier.E001",
            )
        ]
    except TypeError as exc:
        return [
            Error(
                f"CLASSIFIER_BACKEND {path!r} is not a classifier: {exc}",
                hint="The class must subclass classifier.backends.base.Classifier.",
                id="classifier.E002",
            )
        ]
    return []
