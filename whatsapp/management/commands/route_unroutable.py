from typing import Any

from django.core.management.base import BaseCommand

from whatsapp.edge.routing import route_unroutable


class Command(BaseCommand):
    help = (
        "Run the messages the webhook kept as UNROUTABLE (sent to a phone-number id no single active business "
        "had) whose number a business now has: each is routed once, joined to its customer's lead and published. "
        "Prints how many it routed, per business, and what is still unroutable."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"route_unroutable: {route_unroutable().summary()}")
