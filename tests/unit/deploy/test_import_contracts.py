"""The stage contracts in pyproject.toml hold today, and refuse an import across stages: a copy
of the packages with one forbidden import added fails `lint-imports` and names the contract."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ["config", "core", "leads", "dlq", "whatsapp", "classifier", "devtools"]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=where,
        env={"PYTHONPATH": str(where), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contracts_hold_on_the_tree_as_it_is(copy: Path) -> None:
    result = lint_imports(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "whatsapp by stage" in result.stdout


@pytest.mark.parametrize(
    ("module", "imported", "contract"),
    [
        # edge and ingest never import each other: Kafka is the seam
        ("whatsapp/edge/outbox.py", "whatsapp.ingest.intake", "whatsapp by stage"),
        # a stage below never imports the one above it
        ("whatsapp/pipeline/chains.py", "whatsapp.saga.run", "whatsapp by stage"),
        # the contracts stay a helper layer the classifier can import
        ("whatsapp/contracts/result.py", "core.errors", "The wire contracts and the Kafka helpers stand alone"),
    ],
)
def test_an_import_across_stages_is_refused(copy: Path, module: str, imported: str, contract: str) -> None:
    path = copy / module
    path.write_text(path.read_text() + f"\nimport {imported}  # added by the test\n")
    result = lint_imports(copy)
    assert result.returncode == 1, result.stdout
    # lint-imports wraps long contract names; read its summary as one line
    summary = " ".join(result.stdout.split())
    assert re.search(re.escape(contract) + r"(?:(?!KEPT).)*? BROKEN", summary), result.stdout
    assert imported in result.stdout
