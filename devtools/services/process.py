"""Supervising a server process: start it in its own session, wait until it answers, stop it.

Every server runs in its own session (so a Ctrl-C aimed at the parent does
not kill it half-way through a test), writes its output to a log file under
its data directory, and is stopped by :meth:`LocalService.stop` or, failing
that, by an ``atexit`` hook. Standard library only, so the tests' settings can
start servers before Django is set up.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class ServiceError(RuntimeError):
    """A local server could not be found, started or reached."""


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


# --------------------------------------------------------------------------
# the running-server handle

_running: set[LocalService] = set()
_running_lock = threading.Lock()


def _read_tail(path: Path | None, lines: int = 40) -> str:
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
        return _read_tail(self.log_path, lines)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server: its stop signal, wait, then SIGKILL its process group."""
        with self._lock:
            try:
                if self.process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.process.pid, self.stop_signal)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.process.wait(timeout)
                # The server ran in its own session, so its pid is its process
                # group id: kill whatever is left of it (e.g. postgres backends).
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.process.pid, signal.SIGKILL)
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
        # Best effort at interpreter exit: one service failing to stop must not keep the others running.
        with contextlib.suppress(Exception):
            service.stop(timeout=5)


def spawn(
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
    **popen_kwargs: Any,
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

    service = LocalService(name, url, process, port=port, log_path=log_path, data_dir=data_dir, stop_signal=stop_signal)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            service.stop()
            raise ServiceError(
                f"{name} exited with code {process.returncode} while starting on {HOST}:{port}; "
                f"last lines of {log_path}:\n{_read_tail(log_path)}"
            )
        if ready():
            return service
        if time.monotonic() > deadline:
            service.stop()
            raise ServiceError(
                f"{name} did not answer on {HOST}:{port} within {timeout:.0f}s; "
                f"last lines of {log_path}:\n{_read_tail(log_path)}"
            )
        time.sleep(0.2)


def package_dir(package: str) -> Path | None:
    """Directory of an installed package, without importing it (the server binaries ship inside)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))
