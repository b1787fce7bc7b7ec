"""Finding a customer's lead by whatever Meta named them with.

Since 2026 Meta names every customer by a business-scoped user id (BSUID, `US.1349…`) and
withholds the phone number of those who adopted a username, so a lead is found by its BSUID
when there is one, else by its number, and a message that brings the other identifier joins
the lead it finds (never a second lead). Leads get opaque ids: the old phone-number ids
(`wa.<number>`) and any id an upstream producer used are aliases.

The edge (the webhook) resolves every message it stores (`identify`), so ingest usually finds
the lead by the id the request carried, in one statement (`upsert`); only a result our webhook
never saw (the AI service's own intake) takes the slower path through the identifiers.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import connection

if TYPE_CHECKING:
    from leads.models.business import Business

LEAD_ID_PREFIX = "ld."
# Two capital letters (the country), a dot, letters and digits; a parent BSUID has a second
# part (US.ENT.1181…). Meta: at most 128 characters after the country.
BSUID_PATTERN = r"^[A-Z]{2}\.[A-Za-z0-9]{1,128}(\.[A-Za-z0-9]{1,128})?$"
_BSUID = re.compile(BSUID_PATTERN)


def is_bsuid(value: str) -> bool:
    return len(value) <= 140 and _BSUID.match(value) is not None


def new_lead_id() -> str:
    return LEAD_ID_PREFIX + secrets.token_hex(10)


@dataclass(frozen=True)
class CustomerIds:
    """What one message or event says of its customer; any field may be empty, but not
    both wa_id and user_id."""

    wa_id: str = ""
    user_id: str = ""
    parent_user_id: str = ""
    username: str = ""
    name: str = ""

    @property
    def keys(self) -> list[str]:
        """The identifiers that find a lead, for the advisory locks that keep two deliveries
        for one new customer from making two leads."""
        return [
            key for key in (f"u:{self.user_id}" if self.user_id else "", f"p:{self.wa_id}" if self.wa_id else "") if key
        ]


UPSERT_SQL = """
    UPDATE leads_lead l SET
        last_inbound_at = GREATEST(l.last_inbound_at, %(received)s),
        customer_name = CASE WHEN %(name)s <> '' THEN %(name)s ELSE l.customer_name END,
        username = CASE WHEN %(username)s <> '' THEN %(username)s ELSE l.username END,
        updated_at = %(now)s
    FROM (SELECT id FROM leads_lead WHERE business_id = %(business)s AND lead_id = %(lead_id)s
          UNION ALL
          SELECT lead_id FROM leads_leadalias WHERE business_id = %(business)s AND alias = %(lead_id)s
          LIMIT 1) found
    WHERE l.id = found.id
    RETURNING l.*
"""


def lock_identifiers(business: Business, ids: CustomerIds) -> None:
    """Transaction-scoped advisory locks on the customer's identifiers, in a fixed order."""
    keys = sorted(f"lead:{business.pk}:{key}" for key in ids.keys)
    if not keys:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest(%s::text[]) AS k", [keys]
        )
