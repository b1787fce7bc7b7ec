"""`make up`: the whole service running on this machine until Ctrl-C.

Finds or starts Postgres, Redis and Kafka (as `make demo` does, but keeping
their data under the stack directory, ./var/stack by default), migrates,
collects the admin's static files, creates an `admin` superuser on the first
run, then runs the Procfile's processes under honcho: web (gunicorn, the admin
on :8000), ingest, the outbox relay, worker, beat and Flower (:5555). Ctrl-C stops them all and
whatever servers this started. Run as `python -m devtools.stack`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import sys
from pathlib import Path

from devtools import ROOT, VAR
from devtools.services import (
    HOST,
    LocalService,
    ServiceError,
    create_database,
    create_topic,
    ensure_services,
    port_open,
)
from devtools.urls import database_name, with_path

DEFAULT_DIR = VAR / "stack"
PROCFILE = ROOT / "Procfile"
STACK_DB = "whatsapp_handler"
ADMIN_USERNAME = "admin"
PORTS = {"web (admin)": 8000, "Flower": 5555}
TOPIC_PARTITIONS = 3


class StackError(Exception):
    """The stack cannot start; the message says what to do."""


def _say(line: str) -> None:
    print(f"make up: {line}", flush=True)


def check_ports() -> None:
    """The ports are fixed (docs and bookmarks point at them): fail clearly if taken."""
    for name, port in PORTS.items():
        if port_open(HOST, port, timeout=0.3):
            raise StackError(
                f"port {port} ({name}) is already in use; stop whatever listens there "
                f"(another `make up`?) and try again"
            )


def configure_environment(urls: dict[str, str], data_dir: Path) -> None:
    """The settings every process of the stack reads. Values already in the
    environment win; a secret key is made once and kept in the stack directory."""
    if not os.environ.get("DATABASE_URL"):
        os.environ["DATABASE_URL"] = with_path(urls["DATABASE_URL"], f"/{STACK_DB}")
    os.environ["REDIS_URL"] = urls["REDIS_URL"]
    os.environ.setdefault("CELERY_BROKER_URL", urls["REDIS_URL"])
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = urls["KAFKA_BOOTSTRAP_SERVERS"]
    if not os.environ.get("SECRET_KEY"):
        key_file = data_dir / "secret_key"
        if not key_file.exists():
            key_file.write_text(secrets.token_urlsafe(50))
            key_file.chmod(0o600)
        os.environ["SECRET_KEY"] = key_file.read_text().strip()
    os.environ.setdefault("STATIC_ROOT", str(data_dir / "static"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["STACK_DIR"] = str(data_dir)  # the Procfile keeps beat's schedule and Flower's state there
    # Every process counts into one directory and web's /metrics adds them up;
    # emptied at each start, as prometheus_client asks, since the pids are new.
    metrics_dir = data_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    os.environ["PYTHONUNBUFFERED"] = "1"
    # The Procfile's commands (python, celery, gunicorn) are this interpreter's.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def ensure_database(url: str) -> None:
    if create_database(url):
        _say(f"created database {database_name(url)}")


def ensure_topic() -> None:
    """Create the result and request topics if missing, so ingest has partitions to join and
    the outbox relay somewhere to publish."""
    from django.conf import settings

    from whatsapp.kafka import client_config

    for topic in (settings.KAFKA_RESULT_TOPIC, settings.KAFKA_REQUEST_TOPIC):
        if create_topic(client_config(), topic, TOPIC_PARTITIONS, exist_ok=True):
            _say(f"created topic {topic} ({TOPIC_PARTITIONS} partitions)")


def ensure_admin() -> str | None:
    """Create the `admin` superuser on the first run; its password is returned
    to be shown once and is kept nowhere else. The user existing is the memory."""
    from django.contrib.auth import get_user_model

    users = get_user_model().objects
    if users.filter(username=ADMIN_USERNAME).exists():
        return None
    password = secrets.token_urlsafe(12)
    users.create_superuser(ADMIN_USERNAME, "", password)
    return password


def prepare(data_dir: Path) -> str | None:
    import django
    from django.core.management import call_command
    from django.db import connections

    django.setup()
    ensure_database(os.environ["DATABASE_URL"])
    ensure_topic()
    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    password = ensure_admin()
    connections.close_all()  # honcho forks next; no connection must be shared
    return password


def run_procfile() -> int:
    """Run every Procfile process under honcho until Ctrl-C (or one of them dies)."""
    from honcho.environ import parse_procfile
    from honcho.manager import SIGNALS, Manager
    from honcho.printer import Printer

    manager = Manager(Printer(sys.stdout, colour=sys.stdout.isatty()))
    for name, command in parse_procfile(PROCFILE.read_text()).processes.items():
        manager.add_process(name, command, env=dict(os.environ), cwd=str(ROOT))
    manager.loop()
    stopped_by_signal = {info["rc"] for info in SIGNALS.values()}
    return 0 if manager.returncode in stopped_by_signal else (manager.returncode or 0)


def banner(password: str | None, data_dir: Path) -> None:
    from django.conf import settings

    from config.env import redact_url

    db = settings.DATABASES["default"]
    print(flush=True)
    print("  admin   http://127.0.0.1:8000/admin/", flush=True)
    if password:
        print(f"  admin login: {ADMIN_USERNAME} / {password}  (printed once; change it)", flush=True)
    else:
        print(f"  admin login: {ADMIN_USERNAME} (its password was printed on the first run)", flush=True)
    print("  Flower  http://127.0.0.1:5555/", flush=True)
    print(
        f"  data    {data_dir} (database {db['NAME']} on {db['HOST']}:{db['PORT']}, "
        f"Redis {redact_url(settings.REDIS_URL)}, Kafka {settings.KAFKA_BOOTSTRAP_SERVERS}, "
        f"topic {settings.KAFKA_RESULT_TOPIC})",
        flush=True,
    )
    print("  Ctrl-C stops everything.", flush=True)
    print(flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make up", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", default=str(DEFAULT_DIR), help="where the stack keeps its data between runs (default: var/stack)"
    )
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)

    from config.env import SettingError

    # Until honcho takes the signals over, a SIGTERM still stops the servers started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started: list[LocalService] = []
    try:
        check_ports()
        urls, started = ensure_services(data_dir, persistent=True)
        configure_environment(urls, data_dir)
        password = prepare(data_dir)
        banner(password, data_dir)
        return run_procfile()
    except (StackError, ServiceError) as exc:
        print(f"make up: {exc}", file=sys.stderr, flush=True)
        return 1
    except SettingError as exc:
        print(f"configuration error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        for service in reversed(started):
            service.stop()


if __name__ == "__main__":
    sys.exit(main())
