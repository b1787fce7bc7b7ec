"""`manage.py breakers`: see and steer the circuit breakers shared through Redis."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import CommandError, CommandParser

from config.commands import CommandWithExamples
from core import breakers

USAGE = 2
UNKNOWN = 1
# Breaker names are "<kind>:<instance>": webhook:<scheme>://<host>:<port>, whatsapp:<phone_number_id>.
NAME = re.compile(r"^(webhook|whatsapp):\S+$")

EPILOG = """\
exit codes:
  0  done
  1  no breaker of that name is known (close/reset), or Redis is unreachable (open/close/reset)
  2  usage error (including a name that is not <kind>:<instance>)

examples:
  manage.py breakers show --json
  manage.py breakers open webhook:https://crm.example.com:443          # until closed
  manage.py breakers open webhook:https://crm.example.com:443 --seconds 300
  manage.py breakers close webhook:https://crm.example.com:443
  manage.py breakers reset whatsapp:106540352242922
"""


class Command(CommandWithExamples):
    help = (
        "Show the circuit breakers (webhook:<scheme>://<host>:<port>, whatsapp:<phone_number_id>) with their state, "
        "or force one open, closed, or back to a clean state. The state lives in Redis, so this acts on every worker."
    )

    epilog = EPILOG

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        show = actions.add_parser("show", help="Every breaker used recently, with state and counts.")
        show.add_argument("names", nargs="*", metavar="NAME", help="Only these.")
        show.add_argument("--json", action="store_true", help="One JSON array of snapshots.")
        opening = actions.add_parser("open", help="Refuse every call through NAME, in every process.")
        opening.add_argument("name", metavar="NAME")
        opening.add_argument("--seconds", type=float, help="Then half-open as usual (default: until closed).")
        closing = actions.add_parser("close", help="Let calls through NAME again at once.")
        closing.add_argument("name", metavar="NAME")
        resetting = actions.add_parser("reset", help="Close NAME and forget its failures, window and probes.")
        resetting.add_argument("name", metavar="NAME")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "show":
            self.show(options["names"], as_json=options["json"])
            return
        name = options["name"]
        if not NAME.match(name):
            raise CommandError(
                f"{name!r} is not a breaker name (webhook:<scheme>://<host>:<port> or whatsapp:<phone_number_id>)",
                returncode=USAGE,
            )
        if action == "open":
            seconds = options["seconds"]
            if seconds is not None and seconds <= 0:
                raise CommandError("--seconds must be more than 0", returncode=USAGE)
            breakers.force_open(name, seconds)
        else:
            known = {snap["name"] for snap in breakers.all_breakers()}
            if name not in known:
                raise CommandError(
                    f"no breaker named {name!r} is known (known: {', '.join(sorted(known)) or 'none'})",
                    returncode=UNKNOWN,
                )
            {"close": breakers.force_close, "reset": breakers.reset}[action](name)
        snap = breakers.breaker_for(name).snapshot()
        if snap["backend"] != "redis":
            # The change landed only in this short-lived process: the workers never see it.
            raise CommandError("Redis is unreachable: no worker sees this change", returncode=UNKNOWN)
        self.stdout.write(f"{name}: {snap['state']}{' (forced)' if snap['forced'] else ''}")

    def show(self, names: list[str], *, as_json: bool) -> None:
        snapshots = [s for s in breakers.all_breakers() if not names or s["name"] in names]
        if as_json:
            self.stdout.write(json.dumps(snapshots, indent=2, sort_keys=True))
            return
        if not snapshots:
            self.stdout.write("no breaker has been used recently")
            return
        self.stdout.write(
            f"{'name':40}  {'state':9}  {'forced':6}  {'calls':>5}  {'fails':>5}  {'in a row':>8}  "
            f"{'open for':>9}  {'opened at (UTC)':19}  backend"
        )
        for s in snapshots:
            opened = (
                datetime.fromtimestamp(s["opened_at"], tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
                if s.get("opened_at")
                else "-"
            )
            left = (
                "-" if s["state"] == breakers.CLOSED else ("until closed" if s["forced"] else f"{s['remaining']:.1f} s")
            )
            self.stdout.write(
                f"{s['name'][:40]:40}  {s['state']:9}  {'yes' if s['forced'] else 'no':6}  "
                f"{s['calls']:>5}  {s['failures']:>5}  {s['consecutive_failures']:>8}  {left:>9}  "
                f"{opened:19}  {s['backend']}"
            )
