"""manage.py purge_raw: delete raw webhook bodies older than WEBHOOK_RAW_RETENTION_DAYS."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from config.commands import CommandWithExamples
from whatsapp.recovery.raw_retention import purge_raw


class Command(CommandWithExamples):
    help = "Delete raw webhook deliveries (bodies and their changes) older than the retention."
    epilog = """examples:
  manage.py purge_raw              # WEBHOOK_RAW_RETENTION_DAYS
  manage.py purge_raw --days 7

exit codes: 0 done"""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=float, default=None, help="Keep this many days (default: the setting).")

    def handle(self, *args: Any, **options: Any) -> None:
        deleted = purge_raw(days=options["days"])
        self.stdout.write(f"deleted {deleted} raw webhook deliveries")
