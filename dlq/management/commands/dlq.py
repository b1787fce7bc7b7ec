"""`manage.py dlq`: the DLQ review of the admin, from a shell or a script."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from config import progress
from config.commands import CommandWithExamples
from dlq.arguments import USAGE, operator, positive, recorded_operator, when
from dlq.models import DeadLetter, DeadLetterQuerySet, EntryNotOpen
from dlq.requeue import requeue_many

log = logging.getLogger("dlq")
REFUSED = 1  # exit code when some entries could not be requeued, resolved or discarded
# Entries deleted per statement by purge: short transactions, and progress to show.
PURGE_CHUNK = 500

EPILOG = """\
exit codes:
  0  done (for requeue/resolve/discard: every selected entry)
  1  some entries were refused (each printed with why on stderr), an outage (the
     broker down) stopped a requeue with the rest left OPEN, or no such entry
  2  usage error

examples:
  manage.py dlq list --status OPEN --reason unknown_business --json
  manage.py dlq show 42
  manage.py dlq requeue 42 43
  manage.py dlq requeue --reason unknown_business --since 2026-11-24 --dry-run
  manage.py dlq requeue --all-open --rate 5 --yes
  manage.py dlq resolve 42 --note "order entered in the CRM by hand"
  manage.py dlq discard --reason invalid_payload --note "load-test garbage"
  manage.py dlq purge --older-than 90
"""


class Command(CommandWithExamples):
    help = (
        "Review and act on dead letters, like the admin's DLQ pages: list and show entries, requeue them "
        "(by id, by filter, or every open one; paced at DLQ_REQUEUE_RATE_PER_SECOND), resolve or discard them "
        "with a note, and purge old closed ones. Run `manage.py dlq <action> --help` for each action's options."
    )

    epilog = EPILOG

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        listing = actions.add_parser("list", help="List entries, newest first.")
        self._filters(listing, status=True)
        listing.add_argument("--limit", type=positive(int), default=50, help="At most this many (default 50).")
        listing.add_argument("--json", action="store_true", help="One JSON array of entries (without raw bytes).")

        show = actions.add_parser("show", help="Everything about one entry: payload, traceback, saga, Kafka, history.")
        show.add_argument("id", type=int)
        show.add_argument("--json", action="store_true", help="One JSON object with every field.")

        requeue = actions.add_parser(
            "requeue",
            help="Send OPEN entries through the pipeline again (by id, by filter, or --all-open).",
            description="Requeue OPEN entries through dlq.requeue, paced so a large batch does not flood the "
            "pipeline. Oldest first. Each requeue is recorded in the entry's history with --by and "
            "the time. Exit 1 if any entry was refused (not OPEN, still invalid, run not ended). "
            "--all-open says how many entries it will requeue and how long that takes, and on a terminal "
            "asks before it starts (--yes does not ask). Shows progress: a bar on a terminal, else a line "
            "every COMMAND_PROGRESS_SECONDS.",
        )
        self._selection(requeue)
        requeue.add_argument("--limit", type=positive(int), help="Requeue at most this many (oldest first).")
        requeue.add_argument(
            "--rate",
            type=positive(float),
            metavar="PER_SECOND",
            help=f"Pace (default DLQ_REQUEUE_RATE_PER_SECOND, now {settings.DLQ_REQUEUE_RATE_PER_SECOND:g}).",
        )
        requeue.add_argument("--dry-run", action="store_true", help="Only list what would be requeued.")
        requeue.add_argument(
            "--yes",
            action="store_true",
            help="With --all-open on a terminal: go on without asking (it says how many first).",
        )

        for name, verb in (
            ("resolve", "Resolve: mark as dealt with by hand"),
            ("discard", "Discard: not worth processing"),
        ):
            close = actions.add_parser(name, help=f"{verb}. Needs --note; OPEN entries only.")
            self._selection(close)
            close.add_argument(
                "--note",
                required=True,
                help="Why (kept on the entry with --by and the time)."
                if name == "resolve"
                else "The reason for discarding (kept on the entry with --by and the time).",
            )
            close.add_argument("--dry-run", action="store_true", help="Only list what would be changed.")

        purge = actions.add_parser(
            "purge",
            help="Delete entries older than --older-than DAYS; only closed ones unless --include-open.",
            description="Delete REQUEUED, RESOLVED and DISCARDED entries created more than DAYS days ago. OPEN "
            "entries are kept (nobody has dealt with them yet) unless --include-open is given.",
        )
        purge.add_argument("--older-than", type=positive(float), required=True, metavar="DAYS")
        purge.add_argument("--include-open", action="store_true", help="Delete OPEN entries that old too.")
        purge.add_argument("--dry-run", action="store_true", help="Only count what would be deleted.")
        purge.add_argument(
            "--yes", action="store_true", help="Delete without asking (for scripts); off a terminal it is required."
        )
        self._by(purge)

    @staticmethod
    def _filters(parser: argparse.ArgumentParser, *, status: bool) -> None:
        group = parser.add_argument_group("filters (as in the admin)")
        if status:
            group.add_argument("--status", choices=DeadLetter.Status.values)
        group.add_argument("--stage", help="e.g. ingest, NOTIFY_SALES, reply")
        group.add_argument("--reason", help="e.g. unknown_business, invalid_payload, non_retryable")
        group.add_argument("--business", metavar="BUSINESS_ID")
        group.add_argument(
            "--since", type=when, metavar="DATE", help="Created at or after (ISO date or date-time, UTC)."
        )
        group.add_argument("--until", type=when, metavar="DATE", help="Created before.")
        group.add_argument("--search", metavar="TEXT", help="In processing_id, lead_id and the error.")

    @staticmethod
    def _by(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--by",
            metavar="USERNAME",
            help=f"The admin user to record, who must exist and be active (default: the OS user, {operator()!r}).",
        )

    def _selection(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("ids", nargs="*", type=int, metavar="ID", help="Entry ids.")
        self._filters(parser, status=False)
        parser.add_argument("--all-open", action="store_true", help="Every OPEN entry (narrowed by any filter).")
        self._by(parser)

    # -- actions ----------------------------------------------------------------------
    def handle(self, *args: Any, **options: Any) -> None:
        if "by" in options:
            options["by"] = recorded_operator(options["by"])
        getattr(self, f"do_{options['action']}")(options)

    def do_list(self, options: dict) -> None:
        entries = list(
            self._matching(options, status=options["status"]).order_by("-created_at", "-pk")[: options["limit"]]
        )
        if options["json"]:
            self.stdout.write(json.dumps([e.as_summary() for e in entries], indent=2))
            return
        self._table(entries)

    def do_show(self, options: dict) -> None:
        entry = DeadLetter.objects.filter(pk=options["id"]).first()
        if entry is None:
            raise CommandError(f"no dead letter #{options['id']}", returncode=REFUSED)
        detail = entry.as_json()
        if options["json"]:
            self.stdout.write(json.dumps(detail, indent=2))
            return
        for key in (
            "id",
            "status",
            "stage",
            "reason",
            "processing_id",
            "business_id",
            "lead_id",
            "trace_id",
            "created_at",
            "attempts",
            "saga_run",
            "error_class",
            "error_message",
            "kafka",
            "closed_by",
            "closed_at",
            "resolution_note",
            "previous_id",
        ):
            value = detail[key]
            if value not in (None, "", {}):
                self.stdout.write(f"{key:>16}: {json.dumps(value) if isinstance(value, dict) else value}")
        for title, value in (
            ("payload", detail["payload"]),
            ("saga state", detail["saga_state"]),
            ("requeue history", detail["requeue_history"]),
        ):
            if value:
                self.stdout.write(f"\n{title}:\n{json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)}")
        if entry.traceback:
            self.stdout.write(f"\ntraceback:\n{entry.traceback}")

    def do_requeue(self, options: dict) -> None:
        ids = self._selected_ids(options)
        if options["limit"]:
            ids = ids[: options["limit"]]
        if options["dry_run"]:
            self._table(list(DeadLetter.objects.filter(pk__in=ids).order_by("created_at", "pk")))
            self.stdout.write(f"would requeue {len(ids)}")
            return

        rate = options["rate"] or settings.DLQ_REQUEUE_RATE_PER_SECOND
        if options["all_open"]:
            self._confirm_all_open(len(ids), rate, asking=not options["yes"])

        with progress.Progress(self.stdout, "requeued", len(ids)) as shown:

            def report(entry_id: int, entry: DeadLetter | None, refusal: str | None) -> None:
                if entry is not None:
                    run = entry.requeue_history[-1].get("saga_run")
                    shown.say(f"requeued #{entry_id}" + (f" (saga run {run})" if run else ""))
                else:
                    self.stderr.write(f"refused #{entry_id}: {refusal}")
                shown.advance()

            result = requeue_many(ids, by=options["by"], rate=rate, on_each=report)
        self.stdout.write(f"requeued {len(result.requeued)} of {len(ids)}, {len(result.refused)} refused")
        if result.unavailable:
            raise CommandError(
                f"stopped: {result.unavailable}. {len(result.left)} of {len(ids)} left OPEN, as they were "
                f"(first #{result.left[0]}); run the same command again to requeue them",
                returncode=REFUSED,
            )
        if result.refused:
            raise CommandError(f"{len(result.refused)} of {len(ids)} not requeued (see above)", returncode=REFUSED)

    def do_resolve(self, options: dict) -> None:
        self._close(options, "resolve")

    def do_discard(self, options: dict) -> None:
        self._close(options, "discard")

    def do_purge(self, options: dict) -> None:
        doomed = DeadLetter.objects.purgeable(options["older_than"], include_open=options["include_open"])
        if options["dry_run"]:
            self.stdout.write(f"would delete {doomed.count()}")
            return
        total, deleted = doomed.count(), 0
        if total and not options["yes"]:
            self._confirm_purge(total, options)
        # In chunks, oldest first: a year of entries is never one long transaction.
        with progress.Progress(self.stdout, "deleted", total) as shown:
            while chunk := list(doomed.order_by("created_at", "pk").values_list("pk", flat=True)[:PURGE_CHUNK]):
                count, _ = DeadLetter.objects.filter(pk__in=chunk).delete()
                deleted += count
                shown.advance(len(chunk))
        self.stdout.write(f"deleted {deleted}")
        log.warning(
            "dlq purge: %s deleted %d dead letter(s) created more than %g day(s) ago%s",
            options["by"],
            deleted,
            options["older_than"],
            ", OPEN ones included" if options["include_open"] else " (closed ones only)",
        )

    def _confirm_purge(self, total: int, options: dict) -> None:
        """Deleting entries cannot be undone: say how many, then ask; a script says --yes."""
        what = (
            "entries, OPEN ones included (messages nobody has dealt with)"
            if options["include_open"]
            else "closed entries"
        )
        warning = f"purge will delete {total} dead-letter {what}, created more than {options['older_than']:g} days ago."
        if not sys.stdin.isatty():
            raise CommandError(f"{warning} Refused without confirmation: add --yes. Nothing deleted.", returncode=USAGE)
        self.stderr.write(warning)
        if input("Type 'yes' to delete them: ").strip().lower() != "yes":
            raise CommandError("not confirmed; nothing deleted", returncode=USAGE)

    # -- helpers ----------------------------------------------------------------------
    def _matching(self, options: dict[str, Any], *, status: str | None) -> DeadLetterQuerySet:
        return DeadLetter.objects.matching(
            status=status,
            stage=options["stage"],
            reason=options["reason"],
            business=options["business"],
            since=options["since"],
            until=options["until"],
            search=options["search"],
        )

    def _selected_ids(self, options: dict) -> list[int]:
        """The ids given, or the OPEN entries the filters (or --all-open) select, oldest first.
        Taken once, up front, so entries written while we work are not swept in."""
        filtered = any(options[key] for key in ("stage", "reason", "business", "since", "until", "search"))
        if options["ids"]:
            if filtered or options["all_open"]:
                raise CommandError("give entry ids or filters/--all-open, not both", returncode=USAGE)
            return options["ids"]
        if not filtered and not options["all_open"]:
            raise CommandError(
                "say which entries: ids, filters (--reason, --stage, ...) or --all-open", returncode=USAGE
            )
        return list(
            self._matching(options, status=DeadLetter.Status.OPEN)
            .order_by("created_at", "pk")
            .values_list("pk", flat=True)
        )

    def _confirm_all_open(self, count: int, rate: float, *, asking: bool) -> None:
        """Say what --all-open will do before it starts; on a terminal, ask first."""
        warning = (
            f"--all-open will requeue {count} open dead letter{'' if count == 1 else 's'}, "
            f"{rate:g} a second: about {progress.duration(count / rate)}."
        )
        self.stderr.write(warning)
        if not asking or not count or not sys.stdin.isatty():
            return
        answer = input("Type 'yes' to go on: ").strip().lower()
        if answer != "yes":
            raise CommandError("not confirmed; nothing requeued", returncode=USAGE)

    def _close(self, options: dict, method: str) -> None:
        ids = self._selected_ids(options)
        done = "resolved" if method == "resolve" else "discarded"
        if options["dry_run"]:
            self._table(list(DeadLetter.objects.filter(pk__in=ids).order_by("created_at", "pk")))
            self.stdout.write(f"would mark {len(ids)} {done}")
            return
        if not options["note"].strip():
            raise CommandError("--note must say why", returncode=USAGE)
        entries = {e.pk: e for e in DeadLetter.objects.filter(pk__in=ids)}
        refused = 0
        for entry_id in ids:
            entry = entries.get(entry_id)
            try:
                if entry is None:
                    raise EntryNotOpen(f"dead letter #{entry_id} does not exist")
                getattr(entry, method)(options["note"], by=options["by"])
            except EntryNotOpen as exc:
                refused += 1
                self.stderr.write(f"refused #{entry_id}: {exc}")
                continue
            self.stdout.write(f"{done} #{entry_id}")
        self.stdout.write(f"{done} {len(ids) - refused} of {len(ids)}, {refused} refused")
        if refused:
            raise CommandError(f"{refused} of {len(ids)} not {done} (see above)", returncode=REFUSED)

    def _table(self, entries: list[DeadLetter]) -> None:
        if not entries:
            self.stdout.write("no dead letters match")
            return
        self.stdout.write(
            f"{'id':>6}  {'created (UTC)':19}  {'status':9}  {'stage':14}  {'reason':18}  "
            f"{'business':14}  {'processing_id':24}  error"
        )
        for e in entries:
            error = (e.error_message.splitlines() or [""])[0][:60]
            self.stdout.write(
                f"{e.pk:>6}  {e.created_at:%Y-%m-%d %H:%M:%S}  {e.status:9}  {e.stage[:14]:14}  "
                f"{e.reason[:18]:18}  {e.business_id[:14]:14}  {e.processing_id[:24]:24}  {error}"
            )
