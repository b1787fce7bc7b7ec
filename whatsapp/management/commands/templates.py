"""`manage.py templates sync`: pull a business's message templates from the Graph API."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from config.commands import CommandWithExamples
from core.clients import cloud_api
from leads.models import Business
from whatsapp.models import MessageTemplate

REFUSED = 1
USAGE = 2

EPILOG = """\
exit codes:
  0  done (the counts per outcome are printed)
  1  no such business, the business has no WhatsApp Business Account id, or the Graph API refused or failed
  2  usage error

examples:
  manage.py templates sync --business acme-bakery
"""


class Command(CommandWithExamples):
    help = (
        "Pull a business's message templates (name, language, status, category, quality, components) from the "
        "Graph API (GET /{waba-id}/message_templates, every page) into the admin's Message templates. A template "
        "the listing no longer has is marked DELETED, so it is never sent again."
    )
    epilog = EPILOG

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        sync = actions.add_parser("sync", help="Pull the business's templates from the Graph API.")
        sync.add_argument("--business", required=True, metavar="BUSINESS_ID", help="The business's business_id.")

    def handle(self, *args: Any, **options: Any) -> None:
        business = Business.objects.filter(business_id=options["business"]).first()
        if business is None:
            raise CommandError(f"no business {options['business']!r}", returncode=REFUSED)
        if not business.waba_id:
            raise CommandError(
                f"business {business.business_id} has no WhatsApp Business Account id (waba_id): set it in the "
                "admin (Businesses, routing) first",
                returncode=REFUSED,
            )
        try:
            listed = list(cloud_api.list_templates(waba_id=business.waba_id))
        except cloud_api.CloudApiError as exc:
            # The message is the client's: no URL, the token redacted.
            raise CommandError(f"the Graph API did not list the templates: {exc}", returncode=REFUSED) from None
        counts = MessageTemplate.objects.apply_listing(business.waba_id, listed)
        self.stdout.write(
            f"templates of {business.business_id} (WABA {business.waba_id}): {len(listed)} listed; "
            + ", ".join(f"{outcome} {count}" for outcome, count in counts.items())
        )
