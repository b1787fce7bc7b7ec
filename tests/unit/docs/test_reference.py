"""The API reference's pages come from walking the packages, not from a list.

So a module that moves or appears has its page at the next build, migrations and tests have
none, and the walk covers exactly the runtime packages the import contracts name.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from devtools import docs_reference

ROOT = Path(__file__).resolve().parents[3]


def test_the_walk_covers_the_runtime_packages_of_the_import_contracts() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    devtools_contract = next(c for c in contracts if c.get("forbidden_modules") == ["devtools"])

    assert set(docs_reference.RUNTIME_PACKAGES) == set(devtools_contract["source_modules"])


def test_every_module_has_a_page_and_migrations_have_none() -> None:
    modules = {module.name: module for module in docs_reference.modules(ROOT)}

    assert "whatsapp" in modules and modules["whatsapp"].page == "reference/whatsapp/index.md"
    assert modules["whatsapp.saga.run"].page == "reference/whatsapp/saga/run.md"
    assert modules["config.settings"].markdown() == "::: config.settings\n"
    # A package's page shows its docstring and what its __init__ defines, not what it
    # re-exports from its modules: those have their own pages.
    assert modules["whatsapp.saga"].markdown() == "::: whatsapp.saga\n    options:\n      members: false\n"
    assert "members: [default_link, make_breaker, breaker_for" in modules["core.breakers"].markdown()
    assert not [name for name in modules if ".migrations" in name or ".tests" in name]
    on_disk = {
        path
        for package in docs_reference.RUNTIME_PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts
    }
    assert {module.path for module in modules.values()} == on_disk


def test_a_module_that_appears_or_moves_gets_its_page(tmp_path: Path) -> None:
    stage = tmp_path / "app" / "stage"
    stage.mkdir(parents=True)
    for path in ("app/__init__.py", "app/old.py", "app/stage/__init__.py", "app/stage/new.py"):
        (tmp_path / path).write_text('"""A module."""\n')
    (tmp_path / "app" / "migrations").mkdir()
    (tmp_path / "app" / "migrations" / "__init__.py").write_text("")
    (tmp_path / "app" / "templates").mkdir()  # not a package: no page

    before = [module.name for module in docs_reference.modules(tmp_path, ["app"])]
    (tmp_path / "app" / "old.py").rename(tmp_path / "app" / "stage" / "moved.py")
    after = docs_reference.modules(tmp_path, ["app"])

    assert before == ["app", "app.old", "app.stage", "app.stage.new"]
    assert [module.name for module in after] == ["app", "app.stage", "app.stage.moved", "app.stage.new"]
    assert docs_reference.nav(after) == [
        {
            "app": [
                "reference/app/index.md",
                {
                    "stage": [
                        "reference/app/stage/index.md",
                        {"moved": "reference/app/stage/moved.md"},
                        {"new": "reference/app/stage/new.md"},
                    ]
                },
            ]
        }
    ]
