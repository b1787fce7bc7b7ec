"""Action executors: one module per business effect, each registering itself by name."""
from whatsapp.actions import (  # noqa: F401  (imported to register)
    create_order,
    create_support_ticket,
    flag_for_review,
    notify_sales,
    schedule_call,
)
