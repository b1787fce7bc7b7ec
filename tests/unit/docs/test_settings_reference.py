"""The settings reference covers every setting the code reads, each with a description.

The page is generated from config/settings.py (devtools/docs_settings.py), so it cannot list
a setting the file does not read; what can go wrong is a setting read without a comment above
it, or read somewhere else (`os.environ.get("X")` in a module, `settings.X` for a name only
the tests define). The first test is the real check; the others show it can fail: an
uncommented read, a read outside config/settings.py and a Django setting of ours without a
comment are each reported, by name.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from devtools import docs_settings

ROOT = Path(__file__).resolve().parents[3]


def test_every_setting_the_code_reads_is_on_the_page_with_a_description() -> None:
    reference = docs_settings.parse((ROOT / "config" / "settings.py").read_text())
    reads = docs_settings.code_reads(ROOT)
    page = docs_settings.render(reference)

    assert docs_settings.problems(reference, reads, page) == []
    # Not vacuous: the scan found the environment and settings reads it is meant to find.
    assert {"SECRET_KEY", "DATABASE_URL", "KAFKA_SASL_PASSWORD", "PROMETHEUS_MULTIPROC_DIR"} <= set(reads.environment)
    assert {"DLQ_REQUEUE_HANDLER", "METRICS_COLLECTORS", "KAFKA_SECURITY", "BREAKER_OVERRIDES"} <= set(reads.settings)
    rows = docs_settings.page_descriptions(page)
    assert set(reads.environment) <= set(rows)


def test_the_page_says_type_default_and_meaning() -> None:
    reference = docs_settings.parse((ROOT / "config" / "settings.py").read_text())
    rows = {
        line.split("`")[1]: line for line in docs_settings.render(reference).splitlines() if line.startswith("| <a id")
    }

    assert "| integer, ≥ 1 | `500` |" in rows["INGEST_BATCH_SIZE"]
    # Arithmetic on literals is worked out; a default read from another setting links to it.
    assert "`1048576`" in rows["WHATSAPP_WEBHOOK_MAX_BYTES"]
    assert "[`REDIS_URL`](#REDIS_URL)" in rows["CELERY_BROKER_URL"]
    # A variable read under `if DEBUG:` and its `else:` shows both defaults.
    assert "`DEBUG`: `insecure-local-development-key`; not `DEBUG`: required" in rows["SECRET_KEY"]
    # The comment above the argument line, not the one above the statement, describes it.
    assert "PostgreSQL (psycopg 3)" in rows["DATABASE_URL"]
    assert "Goes into Django's [`DATABASES`]" in rows["DATABASE_URL"]
    # A `# --- Section ---` block that names a setting describes the settings under it.
    assert "A breaker opens when BREAKER" in rows["BREAKER_MIN_CALLS"].replace("\\_", "_")
    # Django's own settings link to Django's docs; settings fixed in the code are listed too.
    assert "docs.djangoproject.com/en/5.2/ref/settings/#std-setting-X_FRAME_OPTIONS" in rows["X_FRAME_OPTIONS"]
    assert "whatsapp.ProcessedMessage" in rows["DLQ_SOURCE_MODEL"]


SOURCE = textwrap.dedent(
    """
    from config.env import Env

    env = Env()

    # --- Things ---------------------------------------------------------------
    # How many things a batch holds.
    THINGS = env.int("THINGS", 10, minimum=1)
    UNDESCRIBED = env.str("UNDESCRIBED", "x")
    OURS = "a.dotted.path"
    """
)


def test_a_setting_read_without_a_comment_is_reported() -> None:
    reference = docs_settings.parse(SOURCE)
    page = docs_settings.render(reference)

    assert reference.variables["THINGS"].description == "How many things a batch holds."
    assert reference.undocumented() == ["OURS", "UNDESCRIBED"]
    problems = docs_settings.problems(reference, docs_settings.CodeReads(), page)
    assert len(problems) == 1
    assert problems[0].startswith("UNDESCRIBED (environment variable read at config/settings.py:")
    assert "has no description" in problems[0]


def test_a_variable_read_outside_the_settings_is_reported(tmp_path: Path) -> None:
    package = tmp_path / "rogue"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "module.py").write_text(
        "import os\n\nTIMEOUT = os.environ.get('ROGUE_TIMEOUT', '3')\nNAME = os.environ['ROGUE_NAME']\n"
    )
    reference = docs_settings.parse(SOURCE.replace("UNDESCRIBED = ", "# Described.\nUNDESCRIBED = "))
    reads = docs_settings.code_reads(tmp_path, (package / "module.py",))

    problems = docs_settings.problems(reference, reads, docs_settings.render(reference))
    assert [problem.split(" ")[0] for problem in problems] == ["ROGUE_NAME", "ROGUE_TIMEOUT"]
    assert "rogue/module.py:3" in problems[1]
    assert "is not on the settings page" in problems[1]


def test_a_setting_of_ours_read_by_the_code_needs_a_comment(tmp_path: Path) -> None:
    module = tmp_path / "reader.py"
    module.write_text(
        "from django.conf import settings\n\n"
        "def handler():\n    return getattr(settings, 'OURS', None), settings.THINGS, settings.DEBUG\n"
    )
    reference = docs_settings.parse(SOURCE.replace("UNDESCRIBED = ", "# Described.\nUNDESCRIBED = "))
    reads = docs_settings.code_reads(tmp_path, (module,))

    # OURS is defined in the settings source without a comment; DEBUG is not defined there at
    # all (Django's own default), so it is not this page's to describe.
    problems = docs_settings.problems(reference, reads, docs_settings.render(reference))
    assert [problem.split(" ")[0] for problem in problems] == ["OURS"]
    assert "setting read at reader.py:4" in problems[0]
