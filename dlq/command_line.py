"""The changelist's filters as a `manage.py dlq requeue` command line: what the admin shows
for a bulk requeue too large to run in one request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.contrib.admin.views.main import IGNORED_PARAMS
from django.http import QueryDict
from django.utils.dateparse import parse_date, parse_datetime

from dlq.models import DeadLetter

# The changelist's filter parameters, and the command's option for each.
FILTER_OPTIONS = {
    f"{field}{lookup}": option
    for field, option in (("stage", "--stage"), ("reason", "--reason"), ("business_id", "--business"))
    for lookup in ("", "__exact")
}


def command_filters(params: QueryDict) -> tuple[list[str], datetime | None, datetime | None] | None:
    """The `manage.py dlq requeue` options that select what the changelist's
    filters select (as options, and the created_at bounds), or None when one of
    them has no such option."""
    options: list[str] = []
    since: datetime | None = None
    until: datetime | None = None
    parts = {}
    for name, value in params.items():
        if not isinstance(value, str):
            return None  # a parameter with no value at all: no option says that
        if name != "q" and (name in IGNORED_PARAMS or name == "p"):
            continue  # ordering, page, facets, popup: not a filter
        if name in FILTER_OPTIONS:
            options += [FILTER_OPTIONS[name], value]
        elif name in ("status", "status__exact"):
            if value != DeadLetter.Status.OPEN:
                return None  # nothing there to requeue; the ids will say so
        elif name == "q":
            if not value or any(c.isspace() or c in "\"'" for c in value):
                return None  # several terms: the admin ANDs them, --search takes one
            options += ["--search", value]
        elif name in ("created_at__gte", "created_at__lt"):
            moment = _moment(value)
            if moment is None:
                return None
            if name.endswith("gte"):
                since = moment
            else:
                until = moment
        elif name in ("created_at__year", "created_at__month", "created_at__day"):
            if not value.isdigit():
                return None
            parts[name.rsplit("__", 1)[1]] = int(value)
        else:
            return None
    if parts:
        try:
            start = datetime(parts["year"], parts.get("month", 1), parts.get("day", 1), tzinfo=UTC)
        except (KeyError, ValueError):
            return None
        if "day" in parts:
            end = start + timedelta(days=1)
        elif "month" in parts:
            end = (start + timedelta(days=32)).replace(day=1)
        else:
            end = start.replace(year=start.year + 1)
        since = max(since, start) if since else start
        until = min(until, end) if until else end
    return options, since, until


def _moment(value: str) -> datetime | None:
    """A date or date-time as the admin's date filter writes it (UTC unless it says otherwise)."""
    try:
        parsed = parse_datetime(value)
        if parsed is None:
            day = parse_date(value)
            parsed = datetime(day.year, day.month, day.day, tzinfo=UTC) if day else None
    except ValueError:
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
