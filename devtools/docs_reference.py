"""The modules the docs site's API reference documents, found by walking the runtime packages.

The reference is one page per module, each a single mkdocstrings line (``::: whatsapp.saga.run``),
so the module docstrings, which carry the design notes, are published rather than copied. The
pages are made at build time (docs/hooks/reference.py) from what this walk finds, never from a
list: a module that moves or appears gets its page, and a moved one loses its old page, without
an edit here. Migrations (generated) and tests are left out.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The packages the service runs, the same six the import contract "Dev tools stay out of the
# runtime" lists in pyproject.toml (tests/unit/docs/test_reference.py holds the two together).
RUNTIME_PACKAGES = ("config", "core", "leads", "dlq", "whatsapp", "classifier", "inbox")

# Folders inside a package that hold no runtime module: generated migrations and tests.
SKIPPED = frozenset({"migrations", "tests", "__pycache__"})

# Where the generated pages go inside the docs directory.
PREFIX = "reference"


@dataclass(frozen=True)
class Module:
    """One importable module (a package's ``__init__`` counts as the package)."""

    name: str
    path: Path
    is_package: bool

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.name.split("."))

    @property
    def page(self) -> str:
        """The page's path in the docs directory: a package is its folder's index.md, which
        Material's navigation.indexes shows as the section's own page."""
        if self.is_package:
            return "/".join((PREFIX, *self.parts, "index.md"))
        return "/".join((PREFIX, *self.parts)) + ".md"

    def markdown(self) -> str:
        """The page: mkdocstrings renders the module's docstring and members from the source.

        A package's page shows only what its ``__init__`` defines: the names it re-exports from
        its modules (``whatsapp.saga``'s face, ``whatsapp.models``) are documented on their own
        modules' pages, once."""
        if not self.is_package:
            return f"::: {self.name}\n"
        defined = defined_names(self.path.read_text())
        members = "[" + ", ".join(defined) + "]" if defined else "false"
        return f"::: {self.name}\n    options:\n      members: {members}\n"


def defined_names(source: str) -> list[str]:
    """The public names a module defines itself (classes, functions, assignments), in order;
    imported names are not among them."""
    names: list[str] = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            found = [node.name]
        elif isinstance(node, ast.Assign):
            found = [target.id for target in node.targets if isinstance(target, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found = [node.target.id]
        else:
            found = []
        names += [name for name in found if not name.startswith("_") and name not in names]
    return names


def modules(root: Path, packages: Iterable[str] = RUNTIME_PACKAGES) -> list[Module]:
    """Every module of `packages` under `root`: the packages in the order given, and inside
    each, a package before its modules, by name."""
    found: list[Module] = []
    for package in packages:
        found.extend(sorted(_walk(root / package, package), key=lambda module: module.parts))
    return found


def _walk(directory: Path, dotted: str) -> Iterator[Module]:
    # Only folders with an __init__.py are packages: templates/, static/ and data/ hold no code.
    init = directory / "__init__.py"
    if not init.is_file():
        return
    yield Module(dotted, init, is_package=True)
    for entry in sorted(directory.iterdir()):
        if entry.name in SKIPPED or entry.name.startswith("."):
            continue
        if entry.is_dir():
            yield from _walk(entry, f"{dotted}.{entry.name}")
        elif entry.suffix == ".py" and entry.name != "__init__.py" and entry.stem.isidentifier():
            yield Module(f"{dotted}.{entry.stem}", entry, is_package=False)


def nav(found: Iterable[Module]) -> list[Any]:
    """MkDocs nav entries for the pages, nested as the packages are: each package a section
    whose first entry is its index page, then its modules and sub-packages by name."""
    by_name = {module.name: module for module in found}
    children: dict[str, list[Module]] = {}
    tops: list[Module] = []
    for module in by_name.values():
        parent = module.name.rpartition(".")[0]
        if parent in by_name:
            children.setdefault(parent, []).append(module)
        else:
            tops.append(module)

    def entry(module: Module) -> Any:
        title = module.parts[-1]
        if not module.is_package:
            return {title: module.page}
        kids = sorted(children.get(module.name, []), key=lambda m: m.name)
        return {title: [module.page, *(entry(kid) for kid in kids)]}

    return [entry(module) for module in tops]
