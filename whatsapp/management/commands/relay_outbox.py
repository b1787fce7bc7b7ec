import os
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from core.metrics import serving
from whatsapp.edge.outbox import Relay


class Command(BaseCommand):
    help = (
        "Publish the inbound messages the webhook stored (the outbox) as v1 request events on "
        "KAFKA_REQUEST_TOPIC, marking each published only after the broker acknowledged it. "
        "Woken by the webhook's NOTIFY, else every RELAY_POLL_INTERVAL_SECONDS. "
        "SIGTERM/SIGINT finish the round in hand and exit."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--topic", help="Topic to publish on (default: KAFKA_REQUEST_TOPIC).")
        parser.add_argument("--batch-size", type=int, help="Rows per round (default: RELAY_BATCH_SIZE).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] is not None and options["batch_size"] < 1:
            self.stderr.write("--batch-size must be at least 1")
            raise SystemExit(2)
        relay = Relay(topic=options["topic"], batch_size=options["batch_size"])
        relay.install_signal_handlers()
        try:
            stats = relay.run()
        finally:
            serving.mark_process_dead(os.getpid())
        self.stdout.write(f"relay: {stats.summary()}")
