"""Action executors: one module per business effect, each registering itself by name.

Adding an action: a module here with an ActionExecutor subclass that sets `name` once and is
decorated with registry.register, plus its line in the import below (a model in leads/models.py
only when the effect is a row to keep). Plans then name it by its class. A deployment adds
its own through the WHATSAPP_PLUGINS setting instead (whatsapp/apps.py).
"""

from whatsapp.actions import (  # noqa: F401  (imported to register)
    create_order,
    create_support_ticket,
    flag_for_review,
    notify_sales,
    schedule_call,
)
