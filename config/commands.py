"""What our management commands share."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from django.core.management.base import BaseCommand, CommandParser, DjangoHelpFormatter


class HelpFormatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Django's order of options, with the epilog's line breaks kept."""


class CommandWithExamples(BaseCommand):
    """A command whose --help ends with `epilog` (examples, exit codes) as written:
    argparse would otherwise run its lines together."""

    epilog = ""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = HelpFormatter
        parser.epilog = self.epilog
        return parser


HELP_FLAGS = frozenset({"-h", "--help"})


def only_prints_help(argv: Sequence[str]) -> bool:
    """Whether `manage.py` with these arguments can do nothing but print help or the
    version: no command, `help [command]`, `--version`, or -h/--help before any `--`
    (argparse prints help and exits on meeting it; after `--` it is a plain value).
    Then the settings may load without the secrets a real run needs (manage.py)."""
    args = list(argv[1:])
    if not args or args[0] in {"help", "version", "--version", *HELP_FLAGS}:
        return True
    options = args[1 : args.index("--")] if "--" in args else args[1:]
    return any(arg in HELP_FLAGS for arg in options)
