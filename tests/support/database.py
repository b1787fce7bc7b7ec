"""Taking the test database away from every client, as a Postgres restart does."""
from __future__ import annotations

import time

import psycopg
from psycopg import sql


def restart_database(settings_dict: dict, down_seconds: float) -> int:
    """Terminate every connection to the database and refuse new ones for
    `down_seconds`: what clients see while the server restarts (their
    transactions rolled back, "terminating connection due to administrator
    command", then connections refused). The server itself stays up, because
    other databases on it (other test runs) are not ours to disturb.
    Returns how many connections were terminated."""
    name = settings_dict["NAME"]
    with psycopg.connect(host=settings_dict.get("HOST") or "127.0.0.1", port=settings_dict.get("PORT") or 5432,
                         user=settings_dict.get("USER") or "postgres", password=settings_dict.get("PASSWORD") or None,
                         dbname="postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
        try:
            killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE datname = %s AND pid <> pg_backend_pid()", [name]).fetchone()[0]
            time.sleep(down_seconds)
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(name)))
    return killed
