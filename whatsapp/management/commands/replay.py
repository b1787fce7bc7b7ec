import json
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from config import progress
from config.commands import CommandWithExamples
from whatsapp.recovery.kafka_range import ReplayError, Selection
from whatsapp.recovery.replay import OUTCOMES, ReplayResult, parse_when, replay

REFUSED = 2


class Command(CommandWithExamples):
    help = (
        "Read records from Kafka again and feed them through the normal ingest path (validate, inbox, pipeline).\n"
        "Select them by offsets (--partition with --from-offset/--to-offset) or by time (--since/--until), or both.\n"
        "The ingest group's offsets are not touched. Each record becomes one of:\n"
        + "".join(f"  {name:<10} {meaning}\n" for name, meaning in OUTCOMES.items())
        + "--force re-runs already processed messages as a new saga run: their orders, tickets, sales\n"
        "notifications and replies happen once more. It first says how many messages that is, then asks\n"
        "for confirmation (or needs --yes). Progress shows as it reads: a bar on a terminal, else a line\n"
        "every COMMAND_PROGRESS_SECONDS.\n"
        "Exit codes: 0 done (or nothing in range); 1 Kafka or the database failed; 2 bad arguments or --force refused."
    )

    epilog = (
        "examples:\n"
        "  manage.py replay --since 2h --dry-run\n"
        "  manage.py replay --partition 0 --from-offset 1200 --to-offset 1299\n"
        "  manage.py replay --since 2026-11-24T10:00Z --until 2026-11-24T11:00Z --force --yes"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--topic", help="Topic to read (default: KAFKA_RESULT_TOPIC).")
        parser.add_argument(
            "--partition",
            type=int,
            action="append",
            metavar="N",
            help="Read only this partition; repeat for several (default: all).",
        )
        parser.add_argument(
            "--from-offset", type=int, metavar="OFFSET", help="First offset to replay (needs --partition)."
        )
        parser.add_argument(
            "--to-offset", type=int, metavar="OFFSET", help="Last offset to replay, inclusive (needs --partition)."
        )
        parser.add_argument(
            "--since",
            metavar="TIME",
            help="Records with a Kafka timestamp at or after TIME: ISO-8601 (UTC if no offset) or 15m, 2h, 7d ago.",
        )
        parser.add_argument("--until", metavar="TIME", help="Records with a Kafka timestamp before TIME (same forms).")
        parser.add_argument(
            "--force",
            action="store_true",
            help="Re-run already processed messages as a new saga run (asks first; see --yes).",
        )
        parser.add_argument("--yes", action="store_true", help="Confirm --force without asking (for scripts).")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="List what would be replayed and what each record would become; change nothing.",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print one JSON object (with --dry-run, it lists the records)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        selection = self.selection(options)
        # With --json, stdout holds the one JSON object; progress goes to stderr.
        shown = progress.to(self.stderr if options["json"] else self.stdout)
        try:
            if options["force"] and not options["dry_run"] and not options["yes"]:
                self.confirm_force(replay(selection, force=True, dry_run=True, progress=shown))
            result = replay(
                selection,
                force=options["force"],
                dry_run=options["dry_run"],
                keep_records=options["dry_run"],
                by="manage.py replay --force",
                progress=shown,
            )
        except ReplayError as exc:
            raise CommandError(f"replay: {exc}") from None
        if options["json"]:
            data = {
                "topic": selection.topic,
                "dry_run": options["dry_run"],
                "force": options["force"],
                **result.as_dict(with_records=options["dry_run"]),
            }
            self.stdout.write(json.dumps(data, sort_keys=True))
            return
        if options["dry_run"]:
            for r in result.records:
                detail = f" ({r.detail})" if r.detail else ""
                self.stdout.write(
                    f"{r.topic}[{r.partition}]@{r.offset}  {r.timestamp or '-'}  "
                    f"{r.processing_id or '-'}  {r.outcome}{detail}"
                )
        self.stdout.write(
            f"replay{' (dry run, nothing changed)' if options['dry_run'] else ''}: "
            f"{selection.topic}: {result.summary()}"
        )

    def selection(self, options: dict) -> Selection:
        has_offsets = options["from_offset"] is not None or options["to_offset"] is not None
        if has_offsets and not options["partition"]:
            raise CommandError(
                "--from-offset and --to-offset need --partition: offsets are per partition", returncode=REFUSED
            )
        if not (has_offsets or options["since"] or options["until"]):
            raise CommandError(
                "say what to replay: --since/--until, or --partition with --from-offset/--to-offset", returncode=REFUSED
            )
        for name in ("from_offset", "to_offset"):
            if options[name] is not None and options[name] < 0:
                raise CommandError(f"--{name.replace('_', '-')} must be >= 0", returncode=REFUSED)
        if (
            has_offsets
            and None not in (options["from_offset"], options["to_offset"])
            and options["to_offset"] < options["from_offset"]
        ):
            raise CommandError("--to-offset is before --from-offset", returncode=REFUSED)
        try:
            since = parse_when(options["since"]) if options["since"] else None
            until = parse_when(options["until"]) if options["until"] else None
        except ValueError as exc:
            raise CommandError(f"--since/--until: {exc}", returncode=REFUSED) from None
        if since is not None and until is not None and until <= since:
            raise CommandError("--until must be after --since", returncode=REFUSED)
        return Selection(
            topic=options["topic"] or settings.KAFKA_RESULT_TOPIC,
            partitions=tuple(options["partition"]) if options["partition"] else None,
            from_offset=options["from_offset"],
            to_offset=options["to_offset"],
            since=since,
            until=until,
        )

    def confirm_force(self, preview: ReplayResult) -> None:
        """Say how many messages --force would run again (read with a dry run), then ask."""
        reruns = preview.counts["rerun"]
        warning = (
            f"--force will re-run {reruns} already processed message{'' if reruns == 1 else 's'} "
            f"(of {preview.read} records in the range) as a new saga run: their orders, tickets, "
            "sales notifications and customer replies happen once more."
        )
        if not sys.stdin.isatty():
            raise CommandError(f"{warning} Refused without confirmation: add --yes.", returncode=REFUSED)
        self.stderr.write(warning)
        answer = input("Type 'yes' to go on: ").strip().lower()
        if answer != "yes":
            raise CommandError("not confirmed; nothing replayed", returncode=REFUSED)
