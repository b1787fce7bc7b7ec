import importlib

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class WhatsappConfig(AppConfig):
    name = "whatsapp"
    verbose_name = "WhatsApp pipeline"

    def ready(self) -> None:
        # Handlers and executors register on import; extra ones come from
        # WHATSAPP_PLUGINS so a deployment can add its own without a code change.
        importlib.import_module("whatsapp.handlers")
        importlib.import_module("whatsapp.actions")
        for module in settings.WHATSAPP_PLUGINS:
            load_plugin(module)


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
