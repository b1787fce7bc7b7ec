"""Django settings, read from the environment with local defaults.

Only SECRET_KEY is mandatory outside DEBUG: everything else has a default that
points at services on this machine, so a developer can start with nothing set.
"""

from __future__ import annotations

import json as _json
from datetime import timedelta as _timedelta
from pathlib import Path

from kombu import Exchange, Queue

from config import hardening as _hardening
from config import logging as _logging
from config.env import Env, SettingError

# Every setting read from the environment has a comment above it (or a `# --- Section ---`
# block naming it): the docs site's settings page is generated from them
# (devtools/docs_settings.py), and tests/unit/docs/test_settings_reference.py fails for a
# setting the code reads that has none.
env = Env()
# The repository's root (the image: /app); STATIC_ROOT's default is under it.
BASE_DIR = Path(__file__).resolve().parent.parent

# --- Django: debug mode, secret key, host names -------------------------------
# Django's debug mode: never on a deployed service. With it on, SECRET_KEY may be left unset.
DEBUG = env.bool("DEBUG", False)
# Django's secret key: required unless DEBUG, at least 50 characters, not a startproject
# (django-insecure-) key and none of the keys published in this repository
# (config/hardening.py); .env.example shows how to make one.
if DEBUG:
    SECRET_KEY = env.str("SECRET_KEY", "insecure-local-development-key")
else:
    SECRET_KEY = env.str("SECRET_KEY", required=True)
    if (_problem := _hardening.secret_key_problem(SECRET_KEY, debug=False)) is not None:
        raise SettingError("SECRET_KEY", _problem)
# Comma-separated: the names the site is reached by, plus those the probes and Prometheus use
# (docker-compose: 127.0.0.1 and web).
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

# --- Security (HTTPS, cookies, passwords) -------------------------------------
# SECURE_HTTPS=true where the site is served over HTTPS, directly or behind a
# proxy that sets X-Forwarded-Proto (and overwrites any the client sent): cookies
# travel only over HTTPS, browsers are told to use nothing else (HSTS), and plain
# HTTP is redirected, except the probes and the Prometheus scrape, which call
# from inside the network. Off by default: `make up` and docker-compose.yml
# serve plain http://127.0.0.1:8000. `manage.py check --deploy` passes with it on.
SECURE_HTTPS = env.bool("SECURE_HTTPS", False)
SESSION_COOKIE_SECURE = SECURE_HTTPS
CSRF_COOKIE_SECURE = SECURE_HTTPS
SECURE_SSL_REDIRECT = SECURE_HTTPS
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if SECURE_HTTPS else None
# A year, subdomains included; start lower (say 3600) while trying HTTPS out.
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", 31_536_000 if SECURE_HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HTTPS
# Lets the domain be submitted to browsers' preload lists; false keeps it off them
# (then check --deploy warns security.W021, rightly).
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", SECURE_HTTPS)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Origins (scheme://host[:port]) allowed to POST forms, e.g. https://admin.example.com
# when a proxy serves the admin under a name Django does not see as the host.
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", [])
for _origin in CSRF_TRUSTED_ORIGINS:
    if not _origin.startswith(("https://", "http://")) or not _origin.split("://", 1)[1].strip("/*."):
        raise SettingError("CSRF_TRUSTED_ORIGINS", f"each origin must be scheme://host[:port], got {_origin!r}")
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# The admin login is throttled by django-axes: AXES_FAILURE_LIMIT failed logins for one
# username from one address lock that pair out for AXES_COOLOFF_MINUTES (the attempts and
# lockouts are in the admin under Axes, where deleting one lifts it). Behind the reverse
# proxy every client has the proxy's address: the lockout is then per username, and the
# proxy's own rate limit (deploy/nginx/) is per client.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", 5, minimum=1)
# Minutes a locked-out username and address wait before they may try again.
AXES_COOLOFF_TIME = _timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", 15, minimum=1))
# What a lockout applies to: the username and the address together, so a guesser cannot
# lock a real operator out from elsewhere.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# A successful login clears that pair's failures.
AXES_RESET_ON_SUCCESS = True
# Django's own user model check, then axes in front of it: axes must come first.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# --- Apps, middleware, templates -------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "leads",
    "whatsapp",
    "dlq",
    "classifier",
    "inbox",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's static files (collected into STATIC_ROOT) from gunicorn itself.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lockout answer (429).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------
# Connections are kept for DATABASE_CONN_MAX_AGE seconds and checked before
# reuse: Celery closes a non-persistent connection after every task, and a new
# Postgres connection per task costs more than most of our tasks do.
DATABASES = {
    "default": env.database(
        # PostgreSQL (psycopg 3): postgres://user[:password]@host:port/dbname.
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/whatsapp_handler",
        # Seconds a connection is reused (checked before each reuse); 0 opens one per request or task.
        conn_max_age=env.int("DATABASE_CONN_MAX_AGE", 300, minimum=0),
    )
}
# Seconds to wait for Postgres to accept a connection.
DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env.int("DATABASE_CONNECT_TIMEOUT", 5, minimum=1)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Time, formats and static files -----------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# Times to the second, dates as 2026-12-02, everywhere in the admin (config/formats/en/formats.py).
FORMAT_MODULE_PATH = ["config.formats"]
STATIC_URL = "static/"
# Where `collectstatic` puts the admin's static files, which whitenoise serves
# (default var/static; `make up`: var/stack/static; the image: /app/static).
STATIC_ROOT = Path(env.str("STATIC_ROOT", str(BASE_DIR / "var" / "static")))

# --- Redis and Celery -------------------------------------------------------
# Redis: the Celery broker and result backend, the breakers' state and the
# per-business lanes, unless the settings below name others.
REDIS_URL = env.url("REDIS_URL", "redis://127.0.0.1:6379/0", schemes=("redis", "rediss", "unix"))
# The Celery broker; REDIS_URL unless given.
CELERY_BROKER_URL = env.url("CELERY_BROKER_URL", REDIS_URL, schemes=("redis", "rediss", "unix"))
# Where Celery keeps a failed task's state, under its id (app.AsyncResult(id).state); REDIS_URL unless given.
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", REDIS_URL)
CELERY_TASK_IGNORE_RESULT = True
# A task is acknowledged only once it has run, and requeued when its worker
# dies, so no message is lost to a crash; every task is idempotent for this.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Seconds before Redis redelivers an unacknowledged task.
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=10),
    # Look for overdue unacknowledged tasks every 10 s (kombu's default
    # throttle makes that every 100 s, slowing recovery from a dead worker).
    "unacked_restore_interval": 10,
    "unacked_restore_throttle": 1,
    "socket_connect_timeout": 5,
    "socket_timeout": 10,
}
# Every task's limits, each below CELERY_VISIBILITY_TIMEOUT (checked here, and per task by
# config/task_limits.py): Redis hands a message no worker acknowledged within it to another
# worker, and a task is acknowledged once it returned (a retry's countdown is spent holding
# its message, too). A step does at most one outbound call (WHATSAPP_DEADLINE_SECONDS,
# SALES_WEBHOOK_DEADLINE_SECONDS) and a few queries.
# Seconds a task runs before Celery raises SoftTimeLimitExceeded inside it.
TASK_SOFT_TIME_LIMIT_SECONDS = env.float("TASK_SOFT_TIME_LIMIT_SECONDS", 60.0, minimum=1.0)
# Seconds a task runs before its worker process is killed; above the soft limit.
TASK_TIME_LIMIT_SECONDS = env.float("TASK_TIME_LIMIT_SECONDS", 90.0, minimum=1.0)
# The longest any retry waits, in seconds: longer waits (a breaker open for long, a server's
# Retry-After) are cut to it, and the retry is refused again if it is still too early.
TASK_MAX_RETRY_COUNTDOWN_SECONDS = env.float("TASK_MAX_RETRY_COUNTDOWN_SECONDS", 300.0, minimum=1.0)
if TASK_SOFT_TIME_LIMIT_SECONDS >= TASK_TIME_LIMIT_SECONDS:
    raise SettingError(
        "TASK_SOFT_TIME_LIMIT_SECONDS",
        f"must be below TASK_TIME_LIMIT_SECONDS ({TASK_TIME_LIMIT_SECONDS:g}), got {TASK_SOFT_TIME_LIMIT_SECONDS:g}",
    )
for _name, _seconds in (
    ("TASK_SOFT_TIME_LIMIT_SECONDS", TASK_SOFT_TIME_LIMIT_SECONDS),
    ("TASK_TIME_LIMIT_SECONDS", TASK_TIME_LIMIT_SECONDS),
    ("TASK_MAX_RETRY_COUNTDOWN_SECONDS", TASK_MAX_RETRY_COUNTDOWN_SECONDS),
):
    if _seconds >= CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]:
        raise SettingError(
            _name,
            f"must be below CELERY_VISIBILITY_TIMEOUT ({CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout']} s), "
            f"got {_seconds:g}: Redis would run the task twice",
        )
CELERY_TASK_DEFAULT_QUEUE = "pipeline"
# Queues: "pipeline" for the pipeline's own steps; "webhooks" for sales
# webhook calls and "whatsapp" for Cloud API sends, so a slow outside service
# ties up only the workers of its queue. Workers consume all three by default
# in the demo and tests (celery -Q pipeline,webhooks,whatsapp).
# Every queue is declared, as Celery would create it on first use (an exchange of
# its name, routed by its name), so that Flower's Broker tab, `celery inspect
# active_queues` and a worker started without -Q know all of them; a new queue
# (an executor's `queue`) goes here too (tests/unit/pipeline/test_queues.py checks).
# Priorities need no queue argument: kombu's Redis transport keeps one list per
# priority step (0, 3, 6, 9: whatsapp.pipeline.lanes's lanes); x-max-priority is AMQP's.
CELERY_TASK_QUEUES = tuple(
    Queue(name, Exchange(name), routing_key=name) for name in ("pipeline", "webhooks", "whatsapp")
)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery closes the database connection around every task unless told to
# reuse it; config/celery.py recycles connections the way Django does instead.
CELERY_DB_REUSE_MAX = 1000 if DATABASES["default"]["CONN_MAX_AGE"] else None

# --- Kafka ------------------------------------------------------------------
# The Kafka brokers: host:port[,host:port].
KAFKA_BOOTSTRAP_SERVERS = env.kafka_servers("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
# The topic ingest consumes: the AI service's result events.
KAFKA_RESULT_TOPIC = env.str("KAFKA_RESULT_TOPIC", "ai.process.result")
# Where the outbox relay publishes request events (one per inbound WhatsApp message).
KAFKA_REQUEST_TOPIC = env.str("KAFKA_REQUEST_TOPIC", "ai.process.request")
# Ingest's consumer group on KAFKA_RESULT_TOPIC.
KAFKA_GROUP_ID = env.str("KAFKA_GROUP_ID", "whatsapp-handler")
# The reference classifier (`manage.py classify`): its own consumer group on KAFKA_REQUEST_TOPIC, and
# the backend class that decides (a dotted path; a real model's class can replace the reference rules).
CLASSIFIER_GROUP_ID = env.str("CLASSIFIER_GROUP_ID", "reference-classifier")
# The dotted path of the Classifier subclass `classify` uses (checked by `manage.py check`).
CLASSIFIER_BACKEND = env.str("CLASSIFIER_BACKEND", "classifier.reference.ReferenceClassifier")
# Passed through to librdkafka as-is; unset ones are left out.
KAFKA_SECURITY = {
    key: value
    for key, value in {
        "security.protocol": env.optional("KAFKA_SECURITY_PROTOCOL"),
        "sasl.mechanism": env.optional("KAFKA_SASL_MECHANISM"),
        "sasl.username": env.optional("KAFKA_SASL_USERNAME"),
        "sasl.password": env.optional("KAFKA_SASL_PASSWORD"),
        "ssl.ca.location": env.optional("KAFKA_SSL_CA_LOCATION"),
        "ssl.certificate.location": env.optional("KAFKA_SSL_CERTIFICATE_LOCATION"),
        "ssl.key.location": env.optional("KAFKA_SSL_KEY_LOCATION"),
        "ssl.key.password": env.optional("KAFKA_SSL_KEY_PASSWORD"),
    }.items()
    if value is not None
}
if KAFKA_SECURITY.get("security.protocol", "PLAINTEXT").upper() not in {
    "PLAINTEXT",
    "SSL",
    "SASL_PLAINTEXT",
    "SASL_SSL",
}:
    raise SettingError("KAFKA_SECURITY_PROTOCOL", "must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL")
# The consumer group's session timeout: how long the group waits for a silent consumer before
# moving its partitions.
KAFKA_SESSION_TIMEOUT_MS = env.int("KAFKA_SESSION_TIMEOUT_MS", 10_000, minimum=1_000)
# The longest a consumer's fetch waits at the broker when there is nothing new
# (librdkafka's fetch.wait.max.ms; whatsapp/kafka/config.py says what it costs).
# Apache Kafka answers as soon as a record arrives anyway; Tansu waits it out, so with Tansu
# it bounds the delay a quiet topic adds (10 costs Tansu a tenth of a core per idle consumer).
KAFKA_FETCH_WAIT_MAX_MS = env.int("KAFKA_FETCH_WAIT_MAX_MS", 100, minimum=1)
# Records per ingest batch, at most: ingest takes what has arrived without waiting to fill one.
INGEST_BATCH_SIZE = env.int("INGEST_BATCH_SIZE", 500, minimum=1)
# The longest wait between ingest's retries of a batch while Postgres or the broker is down.
INGEST_MAX_BACKOFF_SECONDS = env.float("INGEST_MAX_BACKOFF_SECONDS", 30.0, minimum=0.1)
# Fault injection for tests and drills: sleep this long between handing a
# batch to the pipeline and committing its offsets. Never set in production.
INGEST_DEBUG_COMMIT_DELAY_SECONDS = env.float("INGEST_DEBUG_COMMIT_DELAY_SECONDS", 0.0, minimum=0.0)

# --- The sweeper, fairness and plugins -----------------------------------------
# The sweeper re-drives inbox rows stuck this long, and purges finished rows
# (the dedupe memory) older than the retention.
SWEEP_STUCK_AFTER_SECONDS = env.float("SWEEP_STUCK_AFTER_SECONDS", 300.0, minimum=1.0)
# How often Celery beat runs the sweeper (the task whatsapp.sweep), in seconds.
SWEEP_INTERVAL_SECONDS = env.float("SWEEP_INTERVAL_SECONDS", 60.0, minimum=1.0)
# Finished inbox rows (the dedupe memory) are purged after this many days.
INBOX_RETENTION_DAYS = env.int("INBOX_RETENTION_DAYS", 30, minimum=1)
# Raw webhook deliveries (bodies as Meta signed them) are deleted after this many days
# (manage.py purge_raw, and the sweeper): they hold customers' numbers and texts.
WEBHOOK_RAW_RETENTION_DAYS = env.int("WEBHOOK_RAW_RETENTION_DAYS", 30, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "sweep-inbox": {"task": "whatsapp.sweep", "schedule": SWEEP_INTERVAL_SECONDS},
}

# Per-business fairness (whatsapp/pipeline/lanes.py): within this rate a business's
# messages go on the normal lane, beyond it on the bulk lane, which workers
# take only when the normal lane is empty. Excess is delayed, never failed.
BUSINESS_RATE_PER_SECOND = env.float("BUSINESS_RATE_PER_SECOND", 20.0, minimum=0.01)
# The per-business token bucket's burst: a business may go this many messages over its rate
# at once before the bulk lane takes the rest.
BUSINESS_RATE_BURST = env.int("BUSINESS_RATE_BURST", 100, minimum=1)

# Comma-separated modules that register extra intent handlers or action executors
# (a deployment's own, without editing this package); a bad one stops the start.
WHATSAPP_PLUGINS = env.list("WHATSAPP_PLUGINS", [])

# --- Logging ----------------------------------------------------------------
# JSON lines by default (LOG_FORMAT=text to read them locally); each carries the
# service, trace and span ids and the message's processing_id, lead_id and intent
# (config/logging.py). SERVICE_NAME defaults to what the command line says.

# The least severe level logged (DEBUG, INFO, WARNING, ERROR), any case.
LOG_LEVEL = env.str("LOG_LEVEL", "INFO").upper()
# `json` lines, or `text` for reading locally.
LOG_FORMAT = env.str("LOG_FORMAT", "json").lower()
if LOG_FORMAT not in {"json", "text"}:
    raise SettingError("LOG_FORMAT", f"must be json or text, got {LOG_FORMAT!r}")
# The `service` field of log lines and the Sentry tag (web, worker, beat, ingest, ...); by
# default what the command line says.
SERVICE_NAME = env.str("SERVICE_NAME", _logging.service_name())
LOGGING = _logging.logging_config(level=LOG_LEVEL, log_format=LOG_FORMAT, service=SERVICE_NAME)

# --- Circuit breakers -------------------------------------------------------
# One breaker per external service, its state shared through REDIS_URL (see
# core/breakers). A breaker opens when BREAKER_FAILURE_RATE of at least
# BREAKER_MIN_CALLS calls in BREAKER_WINDOW_SECONDS failed, or after
# BREAKER_CONSECUTIVE_FAILURES failures in a row; stays open
# BREAKER_OPEN_SECONDS; then lets BREAKER_HALF_OPEN_PROBES calls at a time
# through (a probe slot frees itself after BREAKER_PROBE_TIMEOUT_SECONDS if its
# worker dies) and closes after BREAKER_CLOSE_AFTER of them succeed.

# Where breaker state lives; REDIS_URL unless given.
BREAKER_REDIS_URL = env.url("BREAKER_REDIS_URL", REDIS_URL, schemes=("redis", "rediss", "unix"))
BREAKER_FAILURE_RATE = env.float("BREAKER_FAILURE_RATE", 0.5, minimum=0.01)
if BREAKER_FAILURE_RATE > 1:
    raise SettingError("BREAKER_FAILURE_RATE", f"must be a fraction <= 1, got {BREAKER_FAILURE_RATE}")
BREAKER_MIN_CALLS = env.int("BREAKER_MIN_CALLS", 10, minimum=1)
BREAKER_WINDOW_SECONDS = env.float("BREAKER_WINDOW_SECONDS", 60.0, minimum=1.0)
BREAKER_CONSECUTIVE_FAILURES = env.int("BREAKER_CONSECUTIVE_FAILURES", 5, minimum=1)
BREAKER_OPEN_SECONDS = env.float("BREAKER_OPEN_SECONDS", 30.0, minimum=0.1)
BREAKER_HALF_OPEN_PROBES = env.int("BREAKER_HALF_OPEN_PROBES", 1, minimum=1)
BREAKER_CLOSE_AFTER = env.int("BREAKER_CLOSE_AFTER", 2, minimum=1)
BREAKER_PROBE_TIMEOUT_SECONDS = env.float("BREAKER_PROBE_TIMEOUT_SECONDS", 30.0, minimum=0.1)
# While Redis is unreachable each process keeps its own breakers (true), or
# calls go through unguarded (false). Either way a Redis outage never fails a call.
BREAKER_LOCAL_FALLBACK = env.bool("BREAKER_LOCAL_FALLBACK", True)
# Fail fast on a sick Redis, and during an outage try it again only this often.
BREAKER_REDIS_TIMEOUT_SECONDS = env.float("BREAKER_REDIS_TIMEOUT_SECONDS", 0.5, minimum=0.01)
# How often, during a Redis outage, a process tries the breakers' Redis again.
BREAKER_REDIS_RETRY_SECONDS = env.float("BREAKER_REDIS_RETRY_SECONDS", 5.0, minimum=0.1)


def _breaker_overrides(raw: str | None) -> dict[str, dict[str, float]]:
    """BREAKER_OVERRIDES: {"webhook:https://crm.example.com:443": {"open_seconds": 60}, ...}.
    Checked here so a typo stops the deploy instead of silently leaving a default."""
    fields = {
        "failure_rate": float,
        "min_calls": int,
        "window_seconds": float,
        "consecutive_failures": int,
        "open_seconds": float,
        "half_open_probes": int,
        "close_after": int,
        "probe_timeout_seconds": float,
    }
    if raw is None:
        return {}
    try:
        value = _json.loads(raw)
    except ValueError as exc:
        raise SettingError("BREAKER_OVERRIDES", f"is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise SettingError("BREAKER_OVERRIDES", "must be a JSON object of breaker name -> {setting: number}")
    for name, override in value.items():
        if not isinstance(override, dict):
            raise SettingError("BREAKER_OVERRIDES", f"{name!r} must map to an object of {{setting: number}}")
        for key, number in override.items():
            if key not in fields:
                raise SettingError(
                    "BREAKER_OVERRIDES", f"{name!r}: unknown setting {key!r} (one of {', '.join(fields)})"
                )
            if isinstance(number, bool) or not isinstance(number, (int, float)) or number <= 0:
                raise SettingError("BREAKER_OVERRIDES", f"{name!r}: {key} must be a positive number, got {number!r}")
            if fields[key] is int and number != int(number):
                raise SettingError("BREAKER_OVERRIDES", f"{name!r}: {key} must be a whole number, got {number!r}")
            if key == "failure_rate" and number > 1:
                raise SettingError("BREAKER_OVERRIDES", f"{name!r}: failure_rate must be <= 1, got {number!r}")
            override[key] = fields[key](number)
    return value


# JSON, per-breaker thresholds by breaker name, e.g.
# {"webhook:https://crm.example.com:443": {"open_seconds": 60}}; checked at start.
BREAKER_OVERRIDES = _breaker_overrides(env.optional("BREAKER_OVERRIDES"))

# --- WhatsApp Cloud API -----------------------------------------------------
# Replies go to POST {base}/{version}/{phone_number_id}/messages. The token is a
# bearer secret: Django's error pages hide settings named *TOKEN*, and the client
# never logs it. Unset, replies fail with "WHATSAPP_ACCESS_TOKEN is not set".
# https only, but for DEBUG and a stand-in on a loopback host (127.0.0.1, localhost, ::1).
WHATSAPP_GRAPH_BASE_URL = env.url(
    "WHATSAPP_GRAPH_BASE_URL", "https://graph.facebook.com", schemes=("https", "http"), credentials=False
).rstrip("/")
if (_problem := _hardening.graph_base_url_problem(WHATSAPP_GRAPH_BASE_URL, debug=DEBUG)) is not None:
    raise SettingError("WHATSAPP_GRAPH_BASE_URL", _problem)
# The Graph API version in the Cloud API's URLs: vN.N, e.g. v21.0.
WHATSAPP_GRAPH_VERSION = env.str("WHATSAPP_GRAPH_VERSION", "v21.0")
if (_problem := _hardening.graph_version_problem(WHATSAPP_GRAPH_VERSION)) is not None:
    raise SettingError("WHATSAPP_GRAPH_VERSION", _problem)
# The Cloud API's bearer token (a system user's, with whatsapp_business_messaging); without
# it replies fail as permanent errors.
WHATSAPP_ACCESS_TOKEN = env.optional("WHATSAPP_ACCESS_TOKEN")
# Seconds to connect to the Cloud API.
WHATSAPP_CONNECT_TIMEOUT = env.float("WHATSAPP_CONNECT_TIMEOUT", 3.0, minimum=0.1)
# Seconds to wait for each read of the Cloud API's answer.
WHATSAPP_READ_TIMEOUT = env.float("WHATSAPP_READ_TIMEOUT", 10.0, minimum=0.1)
# Mark each customer message read (blue ticks) once its run has finished: best effort,
# a task of its own on the "whatsapp" queue, never failing or slowing the run.
WHATSAPP_MARK_READ = env.bool("WHATSAPP_MARK_READ", True)
# --- Pacing the Cloud API (whatsapp/send/pacer.py) --------------------------
# Every send (replies, templates, read receipts) takes a slot first, shared by all workers in
# Redis: a send that must wait is retried with a countdown, costing no attempt. 0 turns a limit off.
# Sends per second per business phone number (Meta's throughput: 80 by default, 1,000 upgraded).
WHATSAPP_NUMBER_MPS = env.int("WHATSAPP_NUMBER_MPS", 80, minimum=0)
# Seconds between two messages to one customer from one number (Meta's pair rate limit).
WHATSAPP_PAIR_INTERVAL_SECONDS = env.float("WHATSAPP_PAIR_INTERVAL_SECONDS", 6.0, minimum=0.0)
# Messages one customer may get in a burst, borrowed from later intervals (Meta documents 45).
WHATSAPP_PAIR_BURST = env.int("WHATSAPP_PAIR_BURST", 45, minimum=1)
# Added to every pacing window: the time between our slot and the request reaching Meta.
WHATSAPP_PACE_MARGIN_SECONDS = env.float("WHATSAPP_PACE_MARGIN_SECONDS", 0.1, minimum=0.0)

# --- Opt-out (whatsapp/handlers/opt_out.py) ---------------------------------
# A customer message whose whole text is one of these keywords (case, accents, surrounding
# spaces and punctuation ignored) opts the customer out of every automatic reply and template,
# or back in; each is JSON, a language code -> its keywords, and replaces the default whole.


def _keywords(name: str, raw: str | None, default: dict[str, list[str]]) -> dict[str, list[str]]:
    """WHATSAPP_OPT_OUT_KEYWORDS / WHATSAPP_OPT_IN_KEYWORDS: {"en": ["STOP"], ...}. Checked here,
    so a typo stops the start instead of leaving a customer's STOP unheard."""
    if raw is None:
        return default
    try:
        value = _json.loads(raw)
    except ValueError as exc:
        raise SettingError(name, f"is not valid JSON ({exc})") from None
    if not isinstance(value, dict) or not value:
        raise SettingError(name, 'must be a JSON object of language -> keywords, e.g. {"en": ["STOP"]}')
    for language, words in value.items():
        if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
            raise SettingError(name, f"{language!r} must map to a non-empty list of non-empty strings")
    return value


# JSON, the opt-out keywords per language, e.g. {"en": ["STOP", "UNSUBSCRIBE"], "es": ["BAJA"]}
# (the confirmation goes in the keyword's language); unset, the English, Spanish and
# Portuguese lists of docs/operating/opt-out.md.
WHATSAPP_OPT_OUT_KEYWORDS = _keywords(
    "WHATSAPP_OPT_OUT_KEYWORDS",
    env.optional("WHATSAPP_OPT_OUT_KEYWORDS"),
    {
        "en": ["STOP", "UNSUBSCRIBE", "STOP ALL", "OPT OUT"],
        "es": ["BAJA", "PARAR", "CANCELAR SUSCRIPCIÓN", "DARME DE BAJA"],
        "pt": ["PARAR", "SAIR", "CANCELAR", "DESCADASTRAR"],
    },
)
# JSON, the opt-in keywords per language, e.g. {"en": ["START"]}: an opted-out customer
# sending one is opted back in; unset, the English, Spanish and Portuguese lists of
# docs/operating/opt-out.md.
WHATSAPP_OPT_IN_KEYWORDS = _keywords(
    "WHATSAPP_OPT_IN_KEYWORDS",
    env.optional("WHATSAPP_OPT_IN_KEYWORDS"),
    {
        "en": ["START", "SUBSCRIBE"],
        "es": ["ALTA", "EMPEZAR"],
        "pt": ["COMEÇAR", "VOLTAR"],
    },
)

# --- The agent inbox (inbox/) -----------------------------------------------
# Hours an agent's take-over of a conversation lasts unless they hand it back first: until
# then the pipeline runs the actions but sends no automatic reply to that customer.
INBOX_TAKEOVER_HOURS = env.float("INBOX_TAKEOVER_HOURS", 24.0, minimum=0.1)

# --- WhatsApp webhook (POST /webhooks/whatsapp/) and the request outbox ------
# The verify token is the string you type into the Meta app's webhook settings; Meta
# sends it back in the GET handshake. The app secret (App settings > Basic) signs every
# POST (X-Hub-Signature-256); unset, deliveries are refused with 503, never taken
# unsigned. Both are secrets: Django's error pages hide settings named *TOKEN* and
# *SECRET*, and neither is ever logged. Without a verify token, every handshake is refused.
WHATSAPP_VERIFY_TOKEN = env.optional("WHATSAPP_VERIFY_TOKEN")
# The Meta app's secret, which signs webhook deliveries; unset, deliveries are refused with
# 503 (never taken unsigned).
WHATSAPP_APP_SECRET = env.optional("WHATSAPP_APP_SECRET")
# A signed delivery larger than this is refused with 400 (Meta's are a few KiB).
# DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MiB) caps every request body above it anyway.
WHATSAPP_WEBHOOK_MAX_BYTES = env.int("WHATSAPP_WEBHOOK_MAX_BYTES", 1024 * 1024, minimum=1024)
# The outbox relay (`manage.py relay_outbox`) publishes stored messages on
# KAFKA_REQUEST_TOPIC: up to RELAY_BATCH_SIZE rows a round, woken by the webhook's
# NOTIFY or at the latest every RELAY_POLL_INTERVAL_SECONDS. A broker that does not
# acknowledge within RELAY_DELIVERY_TIMEOUT_MS leaves the rows unpublished; the relay
# backs off (up to RELAY_MAX_BACKOFF_SECONDS) and tries them again.
RELAY_BATCH_SIZE = env.int("RELAY_BATCH_SIZE", 200, minimum=1)
RELAY_POLL_INTERVAL_SECONDS = env.float("RELAY_POLL_INTERVAL_SECONDS", 0.5, minimum=0.01)
RELAY_DELIVERY_TIMEOUT_MS = env.int("RELAY_DELIVERY_TIMEOUT_MS", 15_000, minimum=1_000)
RELAY_MAX_BACKOFF_SECONDS = env.float("RELAY_MAX_BACKOFF_SECONDS", 30.0, minimum=0.1)
# Fault injection for tests and drills: sleep this long after claiming a batch and
# before producing it, or after the broker acknowledged it and before marking it
# published. Never set in production.
RELAY_DEBUG_PUBLISH_DELAY_SECONDS = env.float("RELAY_DEBUG_PUBLISH_DELAY_SECONDS", 0.0, minimum=0.0)
# Fault injection, as above: the pause after the broker acknowledged and before the mark.
RELAY_DEBUG_MARK_DELAY_SECONDS = env.float("RELAY_DEBUG_MARK_DELAY_SECONDS", 0.0, minimum=0.0)

# --- Outbound calls: the Cloud API and the sales webhooks ---------------------
# Every call has a total deadline (connect, TLS, send, headers and body together, even
# against a server that drips one byte a second) and reads at most so many bytes of
# the answer (core/clients/http.py). A Cloud API send that passes its deadline
# after the request went out is an unknown outcome, like a read timeout.
WHATSAPP_DEADLINE_SECONDS = env.float("WHATSAPP_DEADLINE_SECONDS", 15.0, minimum=0.1)
# The most of a Cloud API answer read, in bytes.
WHATSAPP_MAX_RESPONSE_BYTES = env.int("WHATSAPP_MAX_RESPONSE_BYTES", 1024 * 1024, minimum=1024)
# Seconds to connect to a business's sales webhook.
SALES_WEBHOOK_CONNECT_TIMEOUT = env.float("SALES_WEBHOOK_CONNECT_TIMEOUT", 3.0, minimum=0.1)
# The total time a sales webhook call may take, in seconds (retried when passed).
SALES_WEBHOOK_DEADLINE_SECONDS = env.float("SALES_WEBHOOK_DEADLINE_SECONDS", 10.0, minimum=0.1)
# The most of a sales webhook's answer read, in bytes; a larger answer is a permanent error.
SALES_WEBHOOK_MAX_RESPONSE_BYTES = env.int("SALES_WEBHOOK_MAX_RESPONSE_BYTES", 64 * 1024, minimum=1024)
# Sales webhook URLs must be https and reach public addresses only (no loopback,
# private, link-local or cloud metadata address): core/clients/destinations.py.
# For development, SALES_WEBHOOK_ALLOW_HTTP allows plain http, and
# SALES_WEBHOOK_ALLOWED_HOSTS lists host names, addresses or networks allowed anyway
# (e.g. "127.0.0.1,localhost,::1"; the demo and the tests set both).
SALES_WEBHOOK_ALLOW_HTTP = env.bool("SALES_WEBHOOK_ALLOW_HTTP", False)
SALES_WEBHOOK_ALLOWED_HOSTS = env.list("SALES_WEBHOOK_ALLOWED_HOSTS", [])
# A PEM file of the certificate authorities trusted for outbound https (a private
# CA, or a test's own); unset, certifi's bundle, as requests uses.
OUTBOUND_CA_BUNDLE = env.optional("OUTBOUND_CA_BUNDLE")
if OUTBOUND_CA_BUNDLE and not Path(OUTBOUND_CA_BUNDLE).is_file():
    raise SettingError("OUTBOUND_CA_BUNDLE", "is not a readable file")

# --- Long commands ----------------------------------------------------------
# `replay`, `sweep` and `dlq requeue/purge` draw a progress bar on a terminal; written
# to a file or a pipe, they print a line with the count and the time left this often
# instead (config/progress.py).
COMMAND_PROGRESS_SECONDS = env.float("COMMAND_PROGRESS_SECONDS", 5.0, minimum=0.0)

# --- Dead-letter operations -------------------------------------------------
# Requeueing many entries (the admin's action, `manage.py dlq requeue`) is paced
# to this many a second, so requeueing thousands does not flood the pipeline.
DLQ_REQUEUE_RATE_PER_SECOND = env.float("DLQ_REQUEUE_RATE_PER_SECOND", 10.0, minimum=0.1)
# The admin's bulk requeue runs inside a web request: it stops after this many
# seconds (below gunicorn's 30 s worker timeout) and says what is left for
# `manage.py dlq requeue`.
DLQ_ADMIN_REQUEUE_SECONDS = env.float("DLQ_ADMIN_REQUEUE_SECONDS", 20.0, minimum=1.0)
# What sends a dead letter's message through again (a dotted path to a callable taking
# the locked entry and returning the new saga run): the DLQ app stays reusable, and the
# app that wrote the entry decides how to run it again (dlq/requeue.py).
DLQ_REQUEUE_HANDLER = "whatsapp.recovery.requeue.requeue_dead_letter"
# The model of the rows dead letters come from ("app_label.Model"), linked from the DLQ's admin.
DLQ_SOURCE_MODEL = "whatsapp.ProcessedMessage"

# --- Observability ----------------------------------------------------------
# Tracing with sentry-sdk (core/tracing.py). Without SENTRY_DSN nothing is
# sent, but traces still run, so trace and span ids reach every log line and
# every task of a message.
SENTRY_DSN = env.optional("SENTRY_DSN")
# The share of messages whose trace is sent to Sentry (with a DSN), 0 to 1.
SENTRY_TRACES_SAMPLE_RATE = env.float("SENTRY_TRACES_SAMPLE_RATE", 1.0, minimum=0.0)
if SENTRY_TRACES_SAMPLE_RATE > 1:
    raise SettingError("SENTRY_TRACES_SAMPLE_RATE", f"must be a fraction <= 1, got {SENTRY_TRACES_SAMPLE_RATE}")
# Passed to Sentry as the environment of each event.
SENTRY_ENVIRONMENT = env.str("SENTRY_ENVIRONMENT", "production")
# Passed to Sentry as the release of each event; unset, none.
SENTRY_RELEASE = env.optional("SENTRY_RELEASE")
if SENTRY_DSN:
    from sentry_sdk.utils import BadDsn as _BadDsn
    from sentry_sdk.utils import Dsn as _Dsn

    try:
        _Dsn(SENTRY_DSN)
    except _BadDsn as _exc:
        raise SettingError("SENTRY_DSN", f"is not a valid Sentry DSN ({_exc})") from None


# Sentry starts when the apps are ready (whatsapp/apps.py), not while settings load:
# web, workers and ingest all call django.setup(). The DSN is checked here, so a bad
# one stops the process with the other settings' errors.

# Prometheus (core/metrics: counters and serving; whatsapp/ops/collectors.py reads the
# scrape-time gauges). prometheus_client reads PROMETHEUS_MULTIPROC_DIR
# from the environment when imported: set it for every process (web, workers,
# ingest) to add up their counts in the web process's /metrics; unset, each
# process counts alone. It is created here if missing; empty it when the whole
# stack starts. Ingest serves its own counts on INGEST_METRICS_ADDR:INGEST_METRICS_PORT
# (port 0: off).
PROMETHEUS_MULTIPROC_DIR = env.optional("PROMETHEUS_MULTIPROC_DIR")
if PROMETHEUS_MULTIPROC_DIR:
    try:
        Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingError("PROMETHEUS_MULTIPROC_DIR", f"cannot be used as a directory ({exc})") from None
# Ingest serves its own metrics on this port, for where it runs alone (its own container);
# 0 turns it off.
INGEST_METRICS_PORT = env.int("INGEST_METRICS_PORT", 9108, minimum=0)
if INGEST_METRICS_PORT > 65535:
    raise SettingError("INGEST_METRICS_PORT", f"must be a TCP port (0-65535), got {INGEST_METRICS_PORT}")
# The address ingest's metrics port listens on (0.0.0.0: every interface): this machine only,
# unless told otherwise (docker-compose.yml: 0.0.0.0 inside its network).
INGEST_METRICS_ADDR = env.str("INGEST_METRICS_ADDR", "127.0.0.1")
try:
    import ipaddress as _ipaddress

    _ipaddress.ip_address(INGEST_METRICS_ADDR)
except ValueError:
    raise SettingError(
        "INGEST_METRICS_ADDR",
        f"must be an IP address to listen on (127.0.0.1, 0.0.0.0, ::), got {INGEST_METRICS_ADDR!r}",
    ) from None
# The web process's /metrics answers a request with "Authorization: Bearer
# <METRICS_TOKEN>", or a logged-in active staff user holding METRICS_PERMISSION
# (superusers hold every permission); anyone else gets 401/403. Unset: those users
# only. At least 16 characters. Django's error pages hide settings named *TOKEN*.
METRICS_TOKEN = env.optional("METRICS_TOKEN")
METRICS_PERMISSION = "whatsapp.view_metrics"
if METRICS_TOKEN is not None and (
    len(METRICS_TOKEN) < 16 or not METRICS_TOKEN.isascii() or any(c.isspace() for c in METRICS_TOKEN)
):
    raise SettingError("METRICS_TOKEN", "must be at least 16 printable ASCII characters, without spaces")
# What /metrics reads at scrape time (queue lengths, stuck rows, open dead letters,
# breakers, consumer lag) is kept this long per process, so frequent or concurrent
# scrapes cost Postgres, Redis and Kafka one read per window. 0: read every time.
METRICS_CACHE_SECONDS = env.float("METRICS_CACHE_SECONDS", 5.0, minimum=0.0)
# The collectors /metrics reads at scrape time (dotted paths of classes), so the
# serving code (core.metrics.serving) never imports the apps that own the data.
METRICS_COLLECTORS = ["whatsapp.ops.collectors.ScrapeTimeCollector"]
# /readyz gives each dependency (the database, Redis, the Celery broker) this long to answer, in seconds.
READYZ_TIMEOUT_SECONDS = env.float("READYZ_TIMEOUT_SECONDS", 2.0, minimum=0.1)
