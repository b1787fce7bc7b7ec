"""gunicorn settings for the web process (`gunicorn -c config/gunicorn.py config.wsgi`).

Only what the command line cannot say: a worker that exits must be marked dead
in Prometheus's multiprocess directory, or its live gauges linger."""

from typing import Any

from core.metrics.serving import mark_process_dead


def child_exit(server: Any, worker: Any) -> None:
    mark_process_dead(worker.pid)
