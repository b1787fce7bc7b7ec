"""Settings that would fail open stop the start with a message naming the setting: a
guessable SECRET_KEY, the Cloud API over plain http, a Graph version that is not vN.N,
and Celery tasks whose waits or runs reach the broker's visibility timeout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from config import hardening, task_limits

ROOT = Path(__file__).resolve().parents[3]
GOOD_KEY = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


# --- SECRET_KEY --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, fragment",
    [
        ("x" * 49, "must be at least 50 characters"),
        ("django-insecure-" + "x" * 50, "starts with 'django-insecure-'"),
        *[(key, "is a key published in this repository") for key in sorted(hardening.PUBLISHED_SECRET_KEYS)],
    ],
)
def test_a_guessable_secret_key_is_refused_outside_debug(key, fragment):
    assert fragment in (hardening.secret_key_problem(key, debug=False) or "")
    assert hardening.secret_key_problem(key, debug=True) is None
    assert hardening.secret_key_problem(GOOD_KEY, debug=False) is None


# SECRET_KEY=value or SECRET_KEY: value, quoted or not, or setdefault("SECRET_KEY", "value").
KEY_LITERAL = re.compile(r"""SECRET_KEY["']?\s*(?:[=:,]\s*)["']?([A-Za-z0-9_\-!@#%^&*()=+]{8,})""")
# Where the repository publishes keys for people to copy or run with (tests/ included: its
# settings module is what a developer's shell starts from). Test files that pass a key of their
# own to one subprocess are left out: they are keys of one test, never a default.
SHIPPED = ["Dockerfile", "docker-compose.yml", "README.md", "Makefile", "Procfile", ".env.example", "manage.py"]
SHIPPED_TREES = ["docs", "devtools", "deploy", "config", ".ci", "tests/settings.py", "tests/benchmarks"]


def published_keys() -> set[str]:
    files = [ROOT / name for name in SHIPPED]
    for tree in SHIPPED_TREES:
        path = ROOT / tree
        files += [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    found = set()
    for path in files:
        if not path.exists() or path.suffix in {".png", ".pyc"}:
            continue
        for match in KEY_LITERAL.finditer(path.read_text(errors="replace")):
            found.add(match.group(1))
    return found


def test_every_key_the_repository_publishes_is_refused():
    found = published_keys()
    assert "insecure-local-development-key" in found, "the scan finds the DEBUG default in config/settings.py"
    assert not {key for key in found if hardening.secret_key_problem(key, debug=False) is None}


# --- The Cloud API's URL and version -------------------------------------------------------------


@pytest.mark.parametrize(
    "url, debug, refused",
    [
        ("https://graph.facebook.com", False, False),
        ("http://graph.facebook.com", False, True),
        ("http://graph.facebook.com", True, False),
        ("http://127.0.0.1:8123", False, False),  # the tests' and `make up`'s stand-in
        ("http://localhost:8123", False, False),
        ("http://[::1]:8123", False, False),
        ("http://127.0.0.1.example.com", False, True),
        ("http://10.0.0.5", False, True),
    ],
)
def test_the_graph_base_url_is_https_but_for_debug_and_loopback(url, debug, refused):
    problem = hardening.graph_base_url_problem(url, debug=debug)
    assert (problem is not None) is refused
    if refused:
        assert problem.startswith("must be https://")


@pytest.mark.parametrize("version", ["v21.0", "v3.11"])
def test_a_graph_version_is_vN_dot_N(version):
    assert hardening.graph_version_problem(version) is None


@pytest.mark.parametrize("version", ["21.0", "v21", "v21.0/../x", "v21.0\n", "v21.0?x=1", "v\u0662\u0661.0", "latest"])
def test_anything_else_is_not_a_graph_version(version):
    assert "must look like v21.0" in (hardening.graph_version_problem(version) or "")


# --- The settings refuse them at import ----------------------------------------------------------

# Settings the tests' own environment sets that would skew these.
SCRUBBED = {"SECRET_KEY", "DEBUG", "WHATSAPP_GRAPH_BASE_URL", "WHATSAPP_GRAPH_VERSION"}


# ImproperlyConfigured, as manage.py and Django report it; anything else is a traceback.
IMPORT = (
    "import sys\nfrom django.core.exceptions import ImproperlyConfigured\n"
    "try:\n    import config.settings\nexcept ImproperlyConfigured as exc:\n    sys.exit(f'refused: {exc}')"
)


def import_settings(**overrides: str) -> subprocess.CompletedProcess:
    """Import config.settings in a fresh interpreter (no django.setup(): nothing else runs)."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED and not k.startswith("TASK_")}
    env.update({"SECRET_KEY": GOOD_KEY, "DEBUG": "0", "CELERY_VISIBILITY_TIMEOUT": "3600", **overrides})
    return subprocess.run([sys.executable, "-c", IMPORT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({}, None),
        ({"SECRET_KEY": "y" * 40}, "setting SECRET_KEY: must be at least 50 characters when DEBUG is off, got 40"),
        ({"SECRET_KEY": "django-insecure-" + "z" * 50}, "setting SECRET_KEY: starts with 'django-insecure-'"),
        (
            {"SECRET_KEY": "collectstatic-only-build-key-not-used-at-run-time"},
            "setting SECRET_KEY: is a key published in this repository",
        ),
        (
            {"WHATSAPP_GRAPH_BASE_URL": "http://graph.facebook.com"},
            "setting WHATSAPP_GRAPH_BASE_URL: must be https:// (it carries the access token)",
        ),
        ({"WHATSAPP_GRAPH_VERSION": "v21.0/x"}, "setting WHATSAPP_GRAPH_VERSION: must look like v21.0"),
        (
            {"TASK_TIME_LIMIT_SECONDS": "3600"},
            "setting TASK_TIME_LIMIT_SECONDS: must be below CELERY_VISIBILITY_TIMEOUT (3600 s)",
        ),
        (
            {"CELERY_VISIBILITY_TIMEOUT": "200"},
            "setting TASK_MAX_RETRY_COUNTDOWN_SECONDS: must be below CELERY_VISIBILITY_TIMEOUT (200 s)",
        ),
        (
            {"TASK_SOFT_TIME_LIMIT_SECONDS": "90"},
            "setting TASK_SOFT_TIME_LIMIT_SECONDS: must be below TASK_TIME_LIMIT_SECONDS (90)",
        ),
        ({"DEBUG": "1", "SECRET_KEY": "", "WHATSAPP_GRAPH_BASE_URL": "http://graph.example.com"}, None),
    ],
)
def test_the_settings_refuse_to_load(overrides, message):
    result = import_settings(**overrides)
    if message is None:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 1
        assert result.stderr.startswith("refused: " + message), result.stderr


# --- Celery tasks' limits ---------------------------------------------------------------------------


def fake_task(name="whatsapp.step", soft=20.0, hard=25.0, countdown=25.0):
    return SimpleNamespace(name=name, soft_time_limit=soft, time_limit=hard, max_retry_countdown=countdown)


def test_tasks_within_the_visibility_timeout_pass():
    assert task_limits.limit_problems([fake_task()], visibility_timeout=30, conf={}) == []
    # Celery's own tasks are not ours to bound.
    assert (
        task_limits.limit_problems(
            [fake_task("celery.backend_cleanup", None, None, None)], visibility_timeout=30, conf={}
        )
        == []
    )


@pytest.mark.parametrize(
    "task, fragment",
    [
        (fake_task(hard=None), "has no hard time limit (TASK_TIME_LIMIT_SECONDS)"),
        (
            fake_task(hard=30),
            "hard time limit (TASK_TIME_LIMIT_SECONDS) of 30 s must be below CELERY_VISIBILITY_TIMEOUT (30 s)",
        ),
        (fake_task(soft=None), "has no soft time limit (TASK_SOFT_TIME_LIMIT_SECONDS)"),
        (fake_task(soft=40), "soft time limit (TASK_SOFT_TIME_LIMIT_SECONDS) of 40 s must be below CELERY_VISIBILITY"),
        (fake_task(soft=25, hard=25), "soft time limit (TASK_SOFT_TIME_LIMIT_SECONDS) must be below its hard one"),
        (fake_task(countdown=None), "does not bound its retry countdowns (TASK_MAX_RETRY_COUNTDOWN_SECONDS)"),
        (fake_task(countdown=31), "longest retry countdown (TASK_MAX_RETRY_COUNTDOWN_SECONDS) of 31 s must be below"),
    ],
)
def test_a_task_that_could_outlive_the_visibility_timeout_is_named(task, fragment):
    (problem,) = task_limits.limit_problems([task], visibility_timeout=30, conf={})
    assert problem.startswith("task whatsapp.step") and fragment in problem


def test_celerys_global_limits_stand_in_for_a_tasks_own():
    task = fake_task(soft=None, hard=None)
    conf = {"task_soft_time_limit": 10, "task_time_limit": 12}
    assert task_limits.limit_problems([task], visibility_timeout=30, conf=conf) == []


def test_every_registered_task_is_bounded_and_the_system_check_says_so(settings):
    from config.celery import app

    assert {"whatsapp.reply_and_finish", "whatsapp.send_reply", "whatsapp.sweep", "whatsapp.mark_read"} <= set(
        app.tasks
    )
    assert task_limits.app_problems(app) == []
    assert task_limits.system_check(app)() == []
    assert all(
        isinstance(app.tasks[name], task_limits.BoundedTask) for name in app.tasks if name.startswith("whatsapp.")
    )
    low = {**app.conf.broker_transport_options, "visibility_timeout": 10}
    original = app.conf.broker_transport_options
    app.conf.broker_transport_options = low
    try:
        errors = task_limits.system_check(app)()
        assert errors and {error.id for error in errors} == {"config.E001"}
        assert any(
            "task whatsapp.send_reply" in error.msg and "CELERY_VISIBILITY_TIMEOUT (10 s)" in error.msg
            for error in errors
        )
        from config.celery import refuse_tasks_outliving_the_visibility_timeout

        with pytest.raises(SystemExit, match=r"configuration error: task (whatsapp|inbox)\."):
            refuse_tasks_outliving_the_visibility_timeout()
    finally:
        app.conf.broker_transport_options = original
    refuse_tasks_outliving_the_visibility_timeout()  # within it: the worker starts


def test_a_retry_never_waits_longer_than_its_bound():
    assert task_limits.bounded_wait(25, 3600, None, 180) == (25, None)
    assert task_limits.bounded_wait(25, 5, None, 180) == (5, None)
    assert task_limits.bounded_wait(25, None, None, 180) == (25, None), "Celery's default_retry_delay is bounded too"
    countdown, eta = task_limits.bounded_wait(25, None, datetime.now(UTC) + timedelta(hours=2), 180)
    assert countdown == 25 and eta is None
    assert task_limits.bounded_wait(None, 3600, None, 180) == (3600, None)
