"""The README stays a five-minute read that points into the docs site.

At most 200 lines (the reference lives in docs/, built by `make docs`), it names the two
commands, and every docs page or picture it links to exists.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "README.md"
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)|<img [^>]*src=\"(?P<img>[^\"]+)\"")


def links(text: str) -> list[str]:
    return [match.group("target") or match.group("img") for match in LINK.finditer(text)]


def test_the_readme_is_at_most_200_lines() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move the detail to a page under docs/"


def test_the_readme_names_the_two_commands() -> None:
    text = README.read_text()
    assert "make demo" in text
    assert "make test" in text


def test_every_docs_page_the_readme_links_exists() -> None:
    targets = [target for target in links(README.read_text()) if not re.match(r"[a-z]+://", target)]
    docs = [target for target in targets if target.startswith("docs/")]

    assert docs, "the README links no docs page"
    missing = [target for target in targets if not (ROOT / target.split("#", 1)[0]).exists()]
    assert missing == []


def test_the_readme_links_every_page_of_the_site_nav() -> None:
    # One line per docs page: a page added to mkdocs.yml's nav gets its line in "Where to read on".
    nav = re.findall(r"^\s*- (?:[^:\n]+: )?([\w/.-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    linked = {target.split("#", 1)[0] for target in links(README.read_text())}

    assert nav
    assert [page for page in nav if f"docs/{page}" not in linked and page != "index.md"] == []


def test_the_link_check_can_fail() -> None:
    assert links("see [Nowhere](docs/nowhere.md) and ![x](docs/overview.png)") == [
        "docs/nowhere.md",
        "docs/overview.png",
    ]
    assert not (ROOT / "docs/nowhere.md").exists()
