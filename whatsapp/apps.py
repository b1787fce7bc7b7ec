import importlib

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core import breakers, tracing
from core.metrics import counters


class WhatsappConfig(AppConfig):
    name = "whatsapp"
    verbose_name = "WhatsApp pipeline"

    def ready(self) -> None:
        # Here, not in settings: every process (web, workers, ingest, commands) calls
        # django.setup(), and nothing starts as a side effect of reading settings.
        tracing.init_sentry(
            dsn=settings.SENTRY_DSN,
            traces_sample_rate=settings.SENTRY_TRACES_SAMPLE_RATE,
            environment=settings.SENTRY_ENVIRONMENT,
            release=settings.SENTRY_RELEASE,
            service=settings.SERVICE_NAME,
        )
        breakers.add_listener(counters.breaker_changed)
        # Handlers and executors register on import; extra ones come from
        # WHATSAPP_PLUGINS so a deployment can add its own without a code change.
        importlib.import_module("whatsapp.handlers")
        importlib.import_module("whatsapp.actions")
        for module in settings.WHATSAPP_PLUGINS:
            load_plugin(module)
        # The tasks register by name (whatsapp.pipeline.chains sends them by name), in every process
        # that sends them, not only in the workers Celery's autodiscovery imports them in.
        importlib.import_module("whatsapp.tasks")
        from whatsapp.pipeline import signals

        signals.connect()


def load_plugin(module: str) -> None:
    """Import one WHATSAPP_PLUGINS module, which registers its handlers and executors.

    A misspelt module name stops the process at start with the setting named, rather than a
    worker that runs without the plugin and sends its messages to the built-in handlers. An
    error inside the plugin (a misspelt executor class, say) propagates as it is."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            raise ImproperlyConfigured(f"WHATSAPP_PLUGINS names {module!r}, which cannot be imported: {exc}") from exc
        raise
