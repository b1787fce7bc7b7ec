import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from config import progress
from whatsapp.recovery.sweeper import sweep


class Command(BaseCommand):
    help = (
        "Re-drive inbox rows stuck in RECEIVED or PROCESSING (their Celery tasks were lost) from their saga "
        "rows, and purge finished rows older than INBOX_RETENTION_DAYS. Safe to run in several processes at once. "
        "Exit code 0; prints what it did, with progress as it goes (a bar on a terminal, "
        "else a line every COMMAND_PROGRESS_SECONDS)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--stuck-after",
            type=float,
            metavar="SECONDS",
            help="Treat rows untouched this long as stuck (default: SWEEP_STUCK_AFTER_SECONDS).",
        )
        parser.add_argument("--no-purge", action="store_true", help="Do not purge old finished rows.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        # With --json, stdout holds the one JSON object; progress goes to stderr.
        shown = progress.to(self.stderr if options["json"] else self.stdout)
        result = sweep(stuck_after=options["stuck_after"], purge=not options["no_purge"], progress=shown)
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict(), sort_keys=True))
        else:
            self.stdout.write(
                f"sweep: {result.stuck} stuck, re-driven {result.redriven or 'none'}, purged {result.purged}"
            )
