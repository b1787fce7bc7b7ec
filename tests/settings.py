"""Settings for the test run.

Finds the services before Django reads its settings: those named in the
environment, else the local ones if they answer, else throwaway servers from
pip packages. The URLs go into os.environ so that every worker or ingest
process a test starts uses the same services.
"""

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from devtools.services import ensure_services
from devtools.urls import with_path

ROOT = Path(__file__).resolve().parent.parent
LOCAL_WEBHOOK_HOSTS = "127.0.0.1,localhost,::1"
# A key of this run's own: a published one (config/hardening.py) is refused outside DEBUG.
os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("DEBUG", "0")

_urls, STARTED_SERVICES = ensure_services(ROOT / "var" / "test-services")


# Our own database name (pytest-django prefixes test_) and Redis db, so the
# suite never touches a developer's data on the same servers.
# A URL given in the environment is used as it is.
_given = {name for name in ("DATABASE_URL", "REDIS_URL") if os.environ.get(name)}
os.environ["DATABASE_URL"] = (
    _urls["DATABASE_URL"] if "DATABASE_URL" in _given else with_path(_urls["DATABASE_URL"], "/whatsapp_handler")
)
os.environ["REDIS_URL"] = _urls["REDIS_URL"] if "REDIS_URL" in _given else with_path(_urls["REDIS_URL"], "/15")
# Under pytest-xdist each worker (gw0, gw1, ...) takes the Redis db below the
# previous one, and pytest-django gives each its own test database, so
# parallel tests never share a broker queue, a breaker or a row.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw") and _worker[2:].isdigit():
    _db = int(urlsplit(os.environ["REDIS_URL"]).path.strip("/") or 0) - int(_worker[2:])
    if _db < 0:
        raise RuntimeError(f"REDIS_URL's db is too low for xdist worker {_worker}; use a higher one")
    os.environ["REDIS_URL"] = with_path(os.environ["REDIS_URL"], f"/{_db}")
os.environ["CELERY_BROKER_URL"] = os.environ["REDIS_URL"]
os.environ["KAFKA_BOOTSTRAP_SERVERS"] = _urls["KAFKA_BOOTSTRAP_SERVERS"]
os.environ.setdefault("CELERY_VISIBILITY_TIMEOUT", "30")
# Below that visibility timeout, as every task's limits must be (config/task_limits.py).
os.environ.setdefault("TASK_SOFT_TIME_LIMIT_SECONDS", "20")
os.environ.setdefault("TASK_TIME_LIMIT_SECONDS", "25")
os.environ.setdefault("TASK_MAX_RETRY_COUNTDOWN_SECONDS", "25")
# Tansu answers a group join after half the session timeout; 6 s (the usual
# broker minimum) keeps each ingest start in the tests to about 3 s.
os.environ.setdefault("KAFKA_SESSION_TIMEOUT_MS", "6000")
# The tests' sales webhooks are local servers over plain http.
os.environ.setdefault("SALES_WEBHOOK_ALLOW_HTTP", "1")
os.environ.setdefault("SALES_WEBHOOK_ALLOWED_HOSTS", LOCAL_WEBHOOK_HOSTS)
# No pacing of the Cloud API (whatsapp/send/pacer.py): the suite's sends are not to slow down.
# The pacing tests set the real limits themselves.
os.environ.setdefault("WHATSAPP_NUMBER_MPS", "0")
os.environ.setdefault("WHATSAPP_PAIR_INTERVAL_SECONDS", "0")

from config.settings import *  # noqa: E402

ALLOWED_HOSTS = ["*"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Concurrent runs against one server each need their own test database.
if os.environ.get("TEST_DATABASE_NAME"):
    DATABASES["default"]["TEST"] = {"NAME": os.environ["TEST_DATABASE_NAME"]}
