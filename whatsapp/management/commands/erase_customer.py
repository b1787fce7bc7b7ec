"""manage.py erase_customer: erase one customer's personal data (whatsapp.ops.erasure)."""

from __future__ import annotations

import getpass
from typing import Any

from django.core.management.base import CommandError, CommandParser

from config.commands import CommandWithExamples
from leads.models import Business
from whatsapp.ops.erasure import CustomerInFlight, CustomerNotFound, erase_customer


class Command(CommandWithExamples):
    help = "Erase a customer's personal data (number, BSUID, username, name, message texts) everywhere it is kept."
    epilog = """examples:
  manage.py erase_customer --business acme --customer 15550000011
  manage.py erase_customer --business acme --wa-id US.13491208655302741918

exit codes: 0 erased, 1 unknown business or customer, or messages still in flight"""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--business", required=True, help="The business_id.")
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--customer", help="The customer's number or BSUID.")
        who.add_argument("--wa-id", dest="customer", help="Same as --customer.")
        parser.add_argument("--by", default="", help="Who asked (recorded); default: the OS user.")

    def handle(self, *args: Any, **options: Any) -> None:
        business = Business.objects.filter(business_id=options["business"]).first()
        if business is None:
            raise CommandError(f"no business {options['business']}")
        try:
            changed = erase_customer(business, options["customer"], by=options["by"] or f"cli:{getpass.getuser()}")
        except (CustomerNotFound, CustomerInFlight) as exc:
            raise CommandError(str(exc)) from exc
        for table, count in changed.items():
            self.stdout.write(f"{table}: {count}")
        self.stdout.write("customer erased")
