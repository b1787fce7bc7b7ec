import importlib
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from config import task_limits
from config.celery import app as celery_app
from core import breakers, dotted, sentry
from core.metrics import counters

# The modules the stage layout of this release moved (old path -> new path): settings that
# name one by its old dotted path still load, for one release, and `manage.py check` warns.
MOVED_MODULES = {
    "whatsapp.inbound": "whatsapp.models.inbound",
    "whatsapp.contract": "whatsapp.contracts.result",
    "whatsapp.request_contract": "whatsapp.contracts.request",
    "whatsapp.group_member": "whatsapp.kafka.group_member",
    "whatsapp.webhook": "whatsapp.edge.webhook",
    "whatsapp.outbox": "whatsapp.edge.outbox",
    "whatsapp.ingest": "whatsapp.ingest.loop",
    "whatsapp.intake": "whatsapp.ingest.intake",
    "whatsapp.pipeline": "whatsapp.pipeline.hand_off",
    "whatsapp.chains": "whatsapp.pipeline.chains",
    "whatsapp.fairness": "whatsapp.pipeline.lanes",
    "whatsapp.signals": "whatsapp.pipeline.signals",
    "whatsapp.outbound": "whatsapp.send.reply",
    "whatsapp.read_receipts": "whatsapp.send.read_receipts",
    "whatsapp.sweeper": "whatsapp.recovery.sweeper",
    "whatsapp.requeue": "whatsapp.recovery.requeue",
    "whatsapp.replay": "whatsapp.recovery.replay",
    "whatsapp.collectors": "whatsapp.ops.collectors",
    "whatsapp.stats": "whatsapp.ops.stats",
    "whatsapp.overview": "whatsapp.ops.overview",
}


class WhatsappConfig(AppConfig):
    name = "whatsapp"
    verbose_name = "WhatsApp pipeline"

    def ready(self) -> None:
        # Here, not in settings: every process (web, workers, ingest, commands) calls
        # django.setup(), and nothing starts as a side effect of reading settings.
        sentry.init_sentry(
            dsn=settings.SENTRY_DSN,
            traces_sample_rate=settings.SENTRY_TRACES_SAMPLE_RATE,
            environment=settings.SENTRY_ENVIRONMENT,
            release=settings.SENTRY_RELEASE,
            service=settings.SERVICE_NAME,
        )
        breakers.add_listener(counters.breaker_changed)
        dotted.register_moves(MOVED_MODULES)
        checks.register(moved_paths_check)
        # Every task's time limits and retry countdowns below the broker's visibility timeout.
        checks.register(task_limits.system_check(celery_app))
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


def moved_paths_check(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    """A setting that names a module of this app by the path it had before this release still
    works (core.dotted), but the next release drops the old paths: say which to change now."""
    return [
        checks.Warning(
            f"{name} names {old!r}, which moved to {new!r} in this release",
            hint=f"Write {new!r}: the old path is accepted until the next release.",
            id="whatsapp.W001",
        )
        for name in sorted({name for name in dir(settings) if name.isupper()})
        for old, new in dotted.moved_paths(getattr(settings, name))
    ]
