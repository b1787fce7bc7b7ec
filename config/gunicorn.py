"""gunicorn settings for the web process (`gunicorn -c config/gunicorn.py config.wsgi`).

Only what the command line cannot say, or must not be left to it:

- Threaded workers. A sync worker is held for as long as a client takes to send its body:
  a few connections sending a byte a second stopped the webhook, the admin and `/healthz`.
  With threads, a slow body holds one thread while the others answer; the reverse proxy in
  `deploy/nginx/` (required in production) buffers bodies so none reaches us slowly.
- An access log without query strings: the webhook's handshake carries the verify token in
  `hub.verify_token=`, and a referrer may carry anything. `%(U)s` is the path alone.
- A worker that exits must be marked dead in Prometheus's multiprocess directory, or its
  live gauges linger.
"""

from typing import Any

from core.metrics.serving import mark_process_dead

worker_class = "gthread"
threads = 16
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss "%(a)s"'


def child_exit(server: Any, worker: Any) -> None:
    mark_process_dead(worker.pid)
