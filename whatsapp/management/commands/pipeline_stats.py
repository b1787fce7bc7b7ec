import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from whatsapp.ops.stats import pipeline_stats


class Command(BaseCommand):
    help = "Counts of what became of the messages: inbox by status, duplicates, dead letters, and business effects."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print one JSON object (for scripts).")

    def handle(self, *args: Any, **options: Any) -> None:
        stats = pipeline_stats()
        if options["json"]:
            self.stdout.write(json.dumps(stats, sort_keys=True))
            return
        for key, value in stats.items():
            self.stdout.write(f"{key:>20}: {json.dumps(value, sort_keys=True) if isinstance(value, dict) else value}")
