"""The lock files pin, with hashes, what pyproject.toml asks for: `make install` and the
image install from them with --require-hashes, so a dependency added to pyproject.toml
without `make lock` would be missing there (`make install` also says so, via pip check)."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
RUNTIME = [Requirement(r) for r in PROJECT["dependencies"]]
TEST = [Requirement(r) for r in PROJECT["optional-dependencies"]["test"]]
# One pinned requirement: "name==version [; marker] \" and its "--hash=sha256:..." lines.
ENTRY = re.compile(
    r"^([A-Za-z0-9._-]+)==(\S+?)(?: ;([^\\\n]*))? \\\n((?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", re.M
)


def pins(name: str) -> dict[str, tuple[str, int]]:
    """{package: (version, number of hashes)} of a lock file, as this interpreter would install it
    (a package may be pinned once per Python version, behind a marker); every requirement line
    must be one pin with its hashes."""
    text = (ROOT / "requirements" / name).read_text()
    entries = list(ENTRY.finditer(text))
    lines = [line for line in text.splitlines() if re.match(r"^[A-Za-z0-9]", line)]
    assert len(lines) == len(entries), "a requirement line without hashes, which --require-hashes refuses"
    return {
        canonicalize_name(m.group(1)): (m.group(2), m.group(4).count("--hash="))
        for m in entries
        if not m.group(3) or Marker(m.group(3).strip()).evaluate()
    }


@pytest.mark.parametrize(("lock", "wanted"), [("lock.txt", RUNTIME + TEST), ("runtime.lock", RUNTIME)])
def test_every_dependency_is_locked_at_an_allowed_version_with_hashes(lock, wanted):
    locked = pins(lock)
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is not in requirements/{lock}: run make lock"
        version, hashes = locked[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements/{lock} has {name}=={version}, outside {requirement.specifier}: run make lock"
        )
        assert hashes >= 1


def test_the_image_gets_the_same_versions_and_no_test_tools():
    everything, runtime = pins("lock.txt"), pins("runtime.lock")
    assert {name: v for name, (v, _) in runtime.items()} == {name: everything[name][0] for name in runtime}
    assert not {"pytest", "ruff", "mypy", "playwright", "uv"} & set(runtime)
