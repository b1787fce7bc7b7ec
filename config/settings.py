"""Django settings, read from the environment with local defaults.

Only SECRET_KEY is mandatory outside DEBUG: everything else has a default that
points at services on this machine, so a developer can start with nothing set.
"""
from __future__ import annotations

from pathlib import Path

from config.env import Env, SettingError

env = Env()
BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env.bool("DEBUG", False)
if DEBUG:
    SECRET_KEY = env.str("SECRET_KEY", "insecure-local-development-key")
else:
    SECRET_KEY = env.str("SECRET_KEY", required=True)
    if len(SECRET_KEY) < 32:
        raise SettingError("SECRET_KEY", "must be at least 32 characters when DEBUG is off")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "leads",
    "whatsapp",
    "dlq",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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

DATABASES = {"default": env.database("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/whatsapp_handler")}
DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env.int("DATABASE_CONNECT_TIMEOUT", 5, minimum=1)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

# --- Redis and Celery -------------------------------------------------------
REDIS_URL = env.url("REDIS_URL", "redis://127.0.0.1:6379/0", schemes=("redis", "rediss", "unix"))
CELERY_BROKER_URL = env.url("CELERY_BROKER_URL", REDIS_URL, schemes=("redis", "rediss", "unix"))
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
    # Redis redelivers an unacknowledged task after this long.
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=10),
    "socket_connect_timeout": 5,
    "socket_timeout": 10,
}
CELERY_TASK_DEFAULT_QUEUE = "pipeline"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Kafka ------------------------------------------------------------------
KAFKA_BOOTSTRAP_SERVERS = env.kafka_servers("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
KAFKA_RESULT_TOPIC = env.str("KAFKA_RESULT_TOPIC", "ai.process.result")
KAFKA_REQUEST_TOPIC = env.str("KAFKA_REQUEST_TOPIC", "ai.process.request")
KAFKA_GROUP_ID = env.str("KAFKA_GROUP_ID", "whatsapp-handler")
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
if KAFKA_SECURITY.get("security.protocol", "PLAINTEXT").upper() not in {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}:
    raise SettingError("KAFKA_SECURITY_PROTOCOL", "must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL")
INGEST_BATCH_SIZE = env.int("INGEST_BATCH_SIZE", 500, minimum=1)
INGEST_MAX_BACKOFF_SECONDS = env.float("INGEST_MAX_BACKOFF_SECONDS", 30.0, minimum=0.1)
# Fault injection for tests and drills: sleep this long between handing a
# batch to the pipeline and committing its offsets. Never set in production.
INGEST_DEBUG_COMMIT_DELAY_SECONDS = env.float("INGEST_DEBUG_COMMIT_DELAY_SECONDS", 0.0, minimum=0.0)

# --- Logging ----------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"kafka": {"level": "WARNING"}},
}
