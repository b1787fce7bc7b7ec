import importlib

from django.apps import AppConfig
from django.conf import settings


class WhatsappConfig(AppConfig):
    name = "whatsapp"
    verbose_name = "WhatsApp pipeline"

    def ready(self) -> None:
        # Handlers and executors register on import; extra ones come from
        # WHATSAPP_PLUGINS so a deployment can add its own without a code change.
        importlib.import_module("whatsapp.handlers")
        importlib.import_module("whatsapp.actions")
        for module in settings.WHATSAPP_PLUGINS:
            importlib.import_module(module)
