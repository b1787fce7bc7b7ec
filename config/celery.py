"""The Celery app. Settings come from Django's settings under the CELERY_ prefix."""

import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("whatsapp_handler")
app.config_from_object("config.celery_settings:SETTINGS", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_postrun.connect
def recycle_database_connections(**kwargs: Any) -> None:
    """Drop a connection that had errors or outlived DATABASE_CONN_MAX_AGE, as Django
    does after each request, and keep the healthy ones: Celery's own habit of closing
    the connection around every task (tamed by CELERY_DB_REUSE_MAX) costs a Postgres
    connection per task. A connection that broke while idle (Postgres restarted) fails
    the next task's first query; that task retries (DB_RETRY) on a new one."""
    from django.db import close_old_connections

    close_old_connections()


@signals.worker_init.connect
def refuse_tasks_outliving_the_visibility_timeout(sender: Any = None, **kwargs: Any) -> None:
    """Stop a worker whose tasks could wait or run past the broker's visibility timeout
    (config/task_limits.py). Celery runs Django's system checks at worker start but carries
    on past their errors, and logs and swallows an exception from a signal handler: a
    SystemExit is what stops it, with the problems as its message."""
    import django
    from django.core.exceptions import ImproperlyConfigured

    from config.task_limits import refuse_bad_limits

    django.setup()
    try:
        refuse_bad_limits(app)
    except ImproperlyConfigured as exc:
        raise SystemExit(f"configuration error: {exc}") from None
