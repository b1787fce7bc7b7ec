"""`make up`: the whole service running on this machine until Ctrl-C.

Finds or starts Postgres, Redis and Kafka (as `make demo` does, but keeping
their data under the stack directory, ./var/stack by default), migrates,
collects the admin's static files, creates an `admin` superuser on the first
run, then runs the Procfile's processes under honcho: web (gunicorn, the admin and the
WhatsApp webhook on :8000), ingest, the outbox relay, the classifier, worker, beat and Flower
(:5555). Ctrl-C stops them all and whatever servers this started. Run as `python -m devtools.stack`.

So that it works from the first minute: on an empty database it can add a sample business
with the classifier's sample catalog (--sample-business, the default with an embedded
Postgres); without WHATSAPP_ACCESS_TOKEN replies go to a local stand-in Cloud API (a thread of
this process) instead of being dead-lettered; the webhook's secrets are made up once when not
set; and the stack's settings are written to <data dir>/env (mode 0600: it holds the secret key)
for `make manage`, `make send` and `source var/stack/env`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import shutil
import signal
import sys
from pathlib import Path

from devtools import ROOT, VAR, meta
from devtools.services import (
    HOST,
    LocalService,
    ServiceError,
    create_database,
    create_topic,
    ensure_services,
    port_open,
)
from devtools.standin import StandInCloudApi
from devtools.urls import database_name, with_path

DEFAULT_DIR = VAR / "stack"
PROCFILE = ROOT / "Procfile"
STACK_DB = "whatsapp_handler"
ADMIN_USERNAME = "admin"
PORTS = {"web (admin)": 8000, "Flower": 5555}
TOPIC_PARTITIONS = 3
#: What a command needs to reach the running stack: written to <data dir>/env.
ENV_FILE_SETTINGS = (
    "DJANGO_SETTINGS_MODULE",
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_RESULT_TOPIC",
    "KAFKA_REQUEST_TOPIC",
    "SECRET_KEY",
    "STATIC_ROOT",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_VERIFY_TOKEN",
    "WHATSAPP_GRAPH_BASE_URL",
    "STACK_WEB_URL",
    "STACK_STAND_IN_URL",
)
WEB_URL = "http://127.0.0.1:8000"
#: The access token the stack's processes send to the stand-in (which checks nothing): not a secret.
STAND_IN_TOKEN = "stand-in-cloud-api"


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
    # Made once and kept in the stack directory when not set: the secret key, and the webhook's
    # app secret and verify token (set your Meta app's own to receive its webhooks).
    for name, file_name, size in [
        ("SECRET_KEY", "secret_key", 50),
        ("WHATSAPP_APP_SECRET", "app_secret", 24),
        ("WHATSAPP_VERIFY_TOKEN", "verify_token", 24),
    ]:
        if not os.environ.get(name):
            os.environ[name] = kept_secret(data_dir / file_name, size)
    os.environ["STACK_WEB_URL"] = WEB_URL
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


def kept_secret(path: Path, size: int) -> str:
    """A random value made on the first run and read back on the next ones (mode 0600)."""
    if not path.exists():
        write_private(path, secrets.token_urlsafe(size))
    return path.read_text().strip()


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, never readable by others even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    path.chmod(0o600)


def start_stand_in() -> StandInCloudApi | None:
    """Without WHATSAPP_ACCESS_TOKEN, replies go to a local stand-in Cloud API rather than being
    dead-lettered for want of a token; with one, to the real Cloud API."""
    if os.environ.get("WHATSAPP_ACCESS_TOKEN"):
        return None
    stand_in = StandInCloudApi(echo=True).start()
    os.environ["WHATSAPP_GRAPH_BASE_URL"] = os.environ["STACK_STAND_IN_URL"] = stand_in.url
    os.environ["WHATSAPP_ACCESS_TOKEN"] = STAND_IN_TOKEN
    return stand_in


def write_env_file(data_dir: Path) -> Path:
    """The running stack's settings as shell exports, for `make manage`, `make send` and
    `source var/stack/env`."""
    path = data_dir / "env"
    lines = ["# The settings of the stack `make up` runs (rewritten at each start). Holds secrets: keep it 0600."]
    lines += [f"export {name}={shlex.quote(os.environ[name])}" for name in ENV_FILE_SETTINGS if os.environ.get(name)]
    write_private(path, "\n".join(lines) + "\n")
    return path


def ensure_sample_business() -> str | None:
    """On an empty database, Acme Bakery on Meta's test phone-number id with the classifier's sample
    catalog, so `make send` has someone to write to; the business's name, or None if any existed."""
    from classifier.catalog import install_sample_catalog
    from leads.models import Business

    if Business.objects.exists():
        return None
    business = Business.objects.create(
        business_id="acme-bakery",
        tenant_id="tenant-acme",
        display_name="Acme Bakery",
        phone_number_id=meta.PHONE_NUMBER_ID,
    )
    count = install_sample_catalog(business)
    return f"{business.display_name} (phone-number id {meta.PHONE_NUMBER_ID}, {count} products)"


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


def prepare(data_dir: Path, *, sample_business: bool) -> str | None:
    import django
    from django.core.management import call_command
    from django.db import connections

    django.setup()
    ensure_database(os.environ["DATABASE_URL"])
    ensure_topic()
    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    password = ensure_admin()
    if sample_business:
        added = ensure_sample_business()
        if added:
            _say(f"added the sample business {added}")
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


def banner(password: str | None, data_dir: Path, stand_in: StandInCloudApi | None) -> None:
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
    print(f"  webhook {WEB_URL}/webhooks/whatsapp/ (app secret and verify token in {data_dir / 'env'})", flush=True)
    if stand_in is not None:
        print(
            f"  replies go to a local stand-in Cloud API at {stand_in.url}, not to WhatsApp "
            "(no WHATSAPP_ACCESS_TOKEN set)",
            flush=True,
        )
    else:
        print(f"  replies go to the WhatsApp Cloud API at {settings.WHATSAPP_GRAPH_BASE_URL}", flush=True)
    print(
        f'  try it  make send (the sample stream);  make manage ARGS="dlq list";  source {data_dir / "env"}',
        flush=True,
    )
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
    parser.add_argument(
        "--sample-business",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="on an empty database, add a sample business with the sample catalog "
        "(default: on when the database is an embedded one this starts)",
    )
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)

    from config.env import SettingError

    # Until honcho takes the signals over, a SIGTERM still stops the servers started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started: list[LocalService] = []
    stand_in: StandInCloudApi | None = None
    try:
        check_ports()
        urls, started = ensure_services(data_dir, persistent=True)
        configure_environment(urls, data_dir)
        stand_in = start_stand_in()
        sample = args.sample_business
        if sample is None:
            sample = any(service.name == "postgres" for service in started)
        password = prepare(data_dir, sample_business=sample)
        write_env_file(data_dir)
        banner(password, data_dir, stand_in)
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
        if stand_in is not None:
            stand_in.stop()
        for service in reversed(started):
            service.stop()


if __name__ == "__main__":
    sys.exit(main())
