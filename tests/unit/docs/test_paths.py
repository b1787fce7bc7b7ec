"""Every file or folder the README and the docs pages name exists.

The pages name paths in code spans (`whatsapp/saga/run.py`), which `mkdocs build --strict`
cannot check. A module that moves without its page being updated fails here instead.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
TOP = "config|core|leads|dlq|whatsapp|classifier|devtools|tests|deploy|docs|requirements|\\.ci"
PATH = re.compile(rf"`((?:{TOP})/[^`\s]*)`")


def named_paths(text: str) -> set[str]:
    """The repository paths a page names: `a/b.py`, `a/b/`, `a/b.py:func`; a pattern such as
    `whatsapp/handlers/<name>.py` stands for its folder."""
    found = set()
    for match in PATH.finditer(text):
        path = match.group(1).split("<", 1)[0].split(":", 1)[0].rstrip("/")
        found.add(path)
    return found


def missing_paths() -> dict[str, list[str]]:
    missing: dict[str, list[str]] = {}
    for page in PAGES:
        for path in named_paths(page.read_text()):
            if not (ROOT / path).exists():
                missing.setdefault(path, []).append(str(page.relative_to(ROOT)))
    return missing


def test_every_path_the_pages_name_exists() -> None:
    assert missing_paths() == {}, "the pages name paths that do not exist"


def test_the_check_sees_paths_in_code_spans() -> None:
    text = "`whatsapp/handlers/<name>.py`, `tests/faults/test_faults.py`, `docs/nowhere.md`, `var/site/`"
    assert named_paths(text) == {"whatsapp/handlers", "tests/faults/test_faults.py", "docs/nowhere.md"}
    assert not (ROOT / "docs/nowhere.md").exists()
