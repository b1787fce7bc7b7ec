"""`manage.py <command> --help` works on a machine with no settings at all, while
any run that does something still refuses to start without a SECRET_KEY."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Every management command the project ships, found on disk so a new one is covered too.
COMMANDS = sorted(
    path.stem
    for path in ROOT.glob("*/management/commands/*.py")
    if not path.name.startswith("_") and ".venv" not in path.parts
)
SUBCOMMANDS = [["dlq", sub] for sub in ("list", "show", "requeue", "resolve", "discard", "purge")]


def bare(*argv: str) -> subprocess.CompletedProcess:
    """manage.py with a scrubbed environment: no SECRET_KEY, DATABASE_URL, DEBUG or settings module."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT / "var"), "LANG": "C.UTF-8"}
    return subprocess.run(
        [sys.executable, "manage.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_every_project_command_is_found():
    assert {"dlq", "replay", "sweep", "breakers", "ingest_kafka", "pipeline_stats"} <= set(COMMANDS)


@pytest.mark.parametrize("argv", [[name] for name in COMMANDS] + SUBCOMMANDS, ids=" ".join)
def test_help_needs_no_settings(argv):
    result = bare(*argv, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: manage.py {' '.join(argv)}"), result.stdout[:300]
    assert "SECRET_KEY" not in result.stderr


def test_the_command_list_names_the_project_commands():
    result = bare("help")
    assert result.returncode == 0, result.stderr
    listed = result.stdout + result.stderr
    assert all(f"    {name}\n" in listed for name in COMMANDS), listed
    assert "settings are not properly configured" not in listed


@pytest.mark.parametrize("argv", [["check"], ["dlq", "list"], ["sweep", "--json"], ["dlq", "show", "--", "--help"]])
def test_a_real_run_still_refuses_without_a_secret_key(argv):
    result = bare(*argv)
    assert result.returncode == 2
    assert "configuration error: setting SECRET_KEY: is required but not set" in result.stderr
