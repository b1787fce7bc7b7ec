"""What `manage.py dlq` reads from its command line besides the entries: dates, positive
numbers, and who a change is recorded as (--by). Apart from the command so that the command
module holds the subcommands only."""

from __future__ import annotations

import argparse
import getpass
from datetime import UTC, datetime, time
from typing import Any

from django.core.management.base import CommandError
from django.utils.dateparse import parse_date, parse_datetime

USAGE = 2  # exit code of a usage error, as argparse uses


def operator() -> str:
    """Who to record for a change made from the shell."""
    try:
        return f"{getpass.getuser()} (cli)"
    except (KeyError, OSError):
        return "cli"


def recorded_operator(name: str | None) -> str:
    """Who a change is recorded as: the Django user --by names, which must exist and be
    active, or else the OS user. A free-text name would let anyone write anyone into an
    entry's history; a user is someone the admin knows and can account for."""
    if name is None:
        return operator()
    from django.contrib.auth import get_user_model

    User = get_user_model()
    if not User._default_manager.filter(**{User.USERNAME_FIELD: name, "is_active": True}).exists():
        raise CommandError(
            f"--by {name!r}: no active user of that name in the admin; name one, or leave --by out to be "
            f"recorded as {operator()!r}",
            returncode=USAGE,
        )
    return name


def when(value: str) -> datetime:
    """An ISO date (midnight UTC) or date-time (UTC when it names no zone)."""
    parsed = parse_datetime(value)
    if parsed is None:
        day = parse_date(value)
        if day is None:
            raise argparse.ArgumentTypeError(f"not an ISO date or date-time: {value!r}")
        parsed = datetime.combine(day, time.min)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def positive(kind: type) -> Any:
    def parse(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
        if number <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, got {value}")
        return number

    return parse
