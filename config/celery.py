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
