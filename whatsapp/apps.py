import importlib

from django.apps import AppConfig
from django.conf import settings

from core import breakers, tracing
from core.metrics import counters
from whatsapp import signals


class WhatsappConfig(AppConfig):
    name = "whatsapp"
    verbose_name = "WhatsApp pipeline"

    def ready(self) -> None:
        # Here, not in settings: every process (web, workers, ingest, commands) calls
        # django.setup(), and nothing starts as a side effect of reading settings.
        tracing.init_sentry(dsn=settings.SENTRY_DSN, traces_sample_rate=settings.SENTRY_TRACES_SAMPLE_RATE,
                            environment=settings.SENTRY_ENVIRONMENT, release=settings.SENTRY_RELEASE,
                            service=settings.SERVICE_NAME)
        breakers.add_listener(counters.breaker_changed)
        # Handlers and executors register on import; extra ones come from
        # WHATSAPP_PLUGINS so a deployment can add its own without a code change.
        importlib.import_module("whatsapp.handlers")
        importlib.import_module("whatsapp.actions")
        for module in settings.WHATSAPP_PLUGINS:
            importlib.import_module(module)
        # The tasks register by name (whatsapp.chains sends them by name), in every process
        # that sends them, not only in the workers Celery's autodiscovery imports them in.
        importlib.import_module("whatsapp.tasks")
        signals.connect()
