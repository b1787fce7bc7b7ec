#!/usr/bin/env python
"""Django's command-line utility, with configuration errors shown as one line."""

import os
import secrets
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    from config.commands import only_prints_help
    from config.env import SettingError

    if only_prints_help(sys.argv) and not os.environ.get("SECRET_KEY", "").strip():
        # The settings refuse to load without a SECRET_KEY outside DEBUG, and Django needs
        # them to know the project's commands. A run that can only print help signs
        # nothing, so a throwaway key lets it load; any other run still needs a real one.
        os.environ["SECRET_KEY"] = secrets.token_urlsafe(50)
    try:
        execute_from_command_line(sys.argv)
    except SettingError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
