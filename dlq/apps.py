from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured


class DlqConfig(AppConfig):
    name = "dlq"
    verbose_name = "Dead letters"

    def ready(self) -> None:
        checks.register(requeue_handler_check)


def requeue_handler_check(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    """`manage.py check` (and every runserver) says when DLQ_REQUEUE_HANDLER names no
    handler, before an operator's first requeue finds out."""
    from dlq.requeue import requeue_handler  # Django's app loading: dlq.requeue imports the models

    try:
        requeue_handler()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="dlq.E001")]
    return []
