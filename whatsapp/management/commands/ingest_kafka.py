import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from core.metrics import serving
from whatsapp.ingest.loop import Ingestor


class Command(BaseCommand):
    help = (
        "Consume AI-result events from Kafka into the inbox and hand them to the pipeline. "
        "Offsets are committed only after a batch is stored and enqueued. "
        "SIGTERM/SIGINT finish the batch in hand, commit and exit. "
        "Serves its own Prometheus metrics on INGEST_METRICS_ADDR:INGEST_METRICS_PORT "
        "(default 127.0.0.1:9108; port 0 turns it off)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--topic", help="Topic to consume (default: KAFKA_RESULT_TOPIC).")
        parser.add_argument("--group-id", help="Consumer group (default: KAFKA_GROUP_ID).")
        parser.add_argument("--batch-size", type=int, help="Records per batch (default: INGEST_BATCH_SIZE).")
        parser.add_argument("--max-messages", type=int, help="Exit after consuming this many records.")
        parser.add_argument(
            "--idle-exit",
            type=float,
            metavar="SECONDS",
            help="Exit after this many seconds with nothing to read (for scripts and tests).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        for name in ("batch_size", "max_messages"):
            if options[name] is not None and options[name] < 1:
                self.stderr.write(f"--{name.replace('_', '-')} must be at least 1")
                raise SystemExit(2)
        ingestor = Ingestor(
            topic=options["topic"],
            group_id=options["group_id"],
            batch_size=options["batch_size"],
            max_messages=options["max_messages"],
            idle_exit=options["idle_exit"],
        )
        ingestor.install_signal_handlers()
        server = serving.serve_ingest(settings.INGEST_METRICS_PORT, settings.INGEST_METRICS_ADDR)
        try:
            stats = ingestor.run()
        finally:
            if server is not None:
                server.shutdown()
            serving.mark_process_dead(os.getpid())
        self.stdout.write(f"ingest: {stats.summary()}")
