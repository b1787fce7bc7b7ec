"""The settings reference, generated from config/settings.py: one source of truth.

Every setting the service reads from the environment is read in config/settings.py through
config/env.py (``env.int("NAME", default, minimum=...)``, ``env.url(...)``, ...), with a
comment above it. This module reads that file with :mod:`ast` and :mod:`tokenize`, without
importing it (so building the docs needs no SECRET_KEY and no database), and renders the
settings page of the docs site (docs/hooks/settings.py puts it there at build time). It also
scans the runtime packages for every environment variable and Django setting they read, so
tests/unit/docs/test_settings_reference.py fails when one is missing from the page or has no
description: a new setting cannot go undocumented.

How a setting's description is found, first match wins:

1. a comment at the end of the line that names the variable;
2. the comment lines directly above that line (no blank line between);
3. the comment lines directly above the statement that reads it, or above an ``if`` it sits
   in, when that comment names no other variable the statement reads;
4. a comment block in the same ``# --- Section ---`` that names the variable and either
   stands alone (a blank line after it) or opens the run of lines the read is in.

Anything else has no description, and the test says which line wants a comment.

Sections are the ``# --- Title ---`` lines of config/settings.py; the page has one table
per section, in the file's order.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devtools.docs_reference import RUNTIME_PACKAGES, SKIPPED
from devtools.settings_source import (
    READERS,
    CodeSetting,
    Reference,
    Variable,
    _constant,
    _line,
    env_read,
    framework_link,
    parse,
)

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_FILE = ROOT / "config" / "settings.py"


# --- Rendering ---------------------------------------------------------------------------


def _prose(text: str) -> str:
    """A comment as Markdown that shows it as written: outside its `code spans`, `<`, `*` and
    `_` are escaped (a comment writes *TOKEN* for a name pattern, not for emphasis)."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(
        part if part.startswith("`") else part.replace("<", "&lt;").replace("*", r"\*").replace("_", r"\_")
        for part in parts
    )


def _cell(markdown: str) -> str:
    """Markdown for a table cell: pipes outside code spans escaped."""
    parts = re.split(r"(`[^`]*`)", markdown)
    return "".join(part if part.startswith("`") else part.replace("|", r"\|") for part in parts)


def _type(variable: Variable) -> str:
    kind = READERS.get(variable.kind, "string")
    return ", ".join([kind, *variable.constraints])


def _default(variable: Variable) -> str:
    distinct = list(dict.fromkeys(variable.defaults))
    if len(distinct) == 1:
        return distinct[0][1]
    return "; ".join(f"{condition}: {default}" if condition else default for condition, default in distinct)


def _meaning(variable: Variable) -> str:
    text = _prose(variable.description)
    setting = variable.setting
    if setting:
        link = framework_link(setting)
        if link:
            text += f" Sets {link}." if setting == variable.name else f" Goes into {link}."
        elif setting != variable.name:
            text += f" Goes into [`{setting}`](#{setting})."
    return text.strip()


def _value(setting: CodeSetting) -> str:
    if setting.reads:
        return "from " + ", ".join(f"[`{name}`](#{name})" for name in setting.reads)
    if "\n" in setting.value or len(setting.value) > 60:
        return "see `config/settings.py`"
    return f"`{setting.value}`"


def render(reference: Reference) -> str:
    """The page's generated part: one table of environment variables per section, then the
    settings fixed in the code."""
    out: list[str] = []
    for section in reference.sections:
        rows = [variable for variable in reference.variables.values() if variable.section == section]
        if not rows:
            continue
        out += [f"### {section}", "", "| variable | type | default | meaning |", "|---|---|---|---|"]
        for variable in rows:
            out.append(
                f'| <a id="{variable.name}"></a>`{variable.name}` | {_cell(_prose(_type(variable)))} '
                f"| {_cell(_default(variable))} | {_cell(_meaning(variable))} |"
            )
        out.append("")
    out += [
        "## Settings fixed in the code",
        "",
        "Not read from the environment: change them in `config/settings.py`. Where one is built from",
        "environment variables, they are named.",
        "",
        "| setting | value | meaning |",
        "|---|---|---|",
    ]
    for setting in reference.settings.values():
        meaning = _prose(setting.description) or framework_link(setting.name)
        if setting.description and framework_link(setting.name):
            meaning += f" ({framework_link(setting.name)})"
        out.append(f'| <a id="{setting.name}"></a>`{setting.name}` | {_cell(_value(setting))} | {_cell(meaning)} |')
    out.append("")
    return "\n".join(out)


def page_descriptions(markdown: str) -> dict[str, str]:
    """Name -> description of every row of a rendered page, read back from its Markdown: the
    check works on what readers get, not on the parser's intermediate state."""
    found = {}
    for line in markdown.splitlines():
        match = re.match(r'^\| <a id="(?P<name>[A-Z0-9_]+)"></a>`(?P=name)` \|(?P<cells>.*)\|$', line)
        if match:
            cells = re.split(r"(?<!\\)\|", match.group("cells"))
            found[match.group("name")] = cells[-1].strip()
    return found


# --- What the code reads -----------------------------------------------------------------


@dataclass
class CodeReads:
    """Where the runtime packages read environment variables and Django settings."""

    environment: dict[str, list[str]] = field(default_factory=dict)
    settings: dict[str, list[str]] = field(default_factory=dict)


def python_files(root: Path, packages: Iterable[str] = RUNTIME_PACKAGES) -> Iterator[Path]:
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if not SKIPPED.intersection(path.relative_to(root).parts):
                yield path


def settings_read(node: ast.AST) -> str | None:
    """The name when `node` reads a Django setting: ``settings.NAME`` or
    ``getattr(settings, "NAME"[, default])``."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "settings":
        return node.attr if node.attr.isupper() else None
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "getattr"
        and len(node.args) >= 2
        and isinstance(node.args[0], ast.Name)
        and node.args[0].id == "settings"
    ):
        name = _constant(node.args[1])
        return name if name and name.isupper() else None
    return None


def code_reads(root: Path, files: Iterable[Path] | None = None) -> CodeReads:
    reads = CodeReads()
    for path in python_files(root) if files is None else files:
        where = path.relative_to(root) if path.is_relative_to(root) else path
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            found = env_read(node)
            if found:
                reads.environment.setdefault(found[0], []).append(f"{where}:{_line(node)}")
            name = settings_read(node)
            if name:
                reads.settings.setdefault(name, []).append(f"{where}:{_line(node)}")
    return reads


def problems(reference: Reference, reads: CodeReads, markdown: str) -> list[str]:
    """What keeps the page from being complete, one line each; empty when all is well.

    Every environment variable the code reads, and every Django setting it reads that the
    settings file defines, must be a row of the page with a description: for an environment
    variable, and for a setting of our own, the comment config/settings.py has for it;
    Django's and Celery's own settings fixed in the code may go with a link to their docs.
    """
    rows = page_descriptions(markdown)
    uncommented = set(reference.undocumented())
    found = []
    wanted = {name: ("environment variable", where) for name, where in reads.environment.items()}
    for name, where in reads.settings.items():
        if name in reference.names:
            wanted.setdefault(name, ("setting", where))
    for name in reference.variables:
        wanted.setdefault(name, ("environment variable", [f"config/settings.py:{reference.variables[name].line}"]))
    for name, (what, where) in sorted(wanted.items()):
        places = ", ".join(where[:3])
        if name not in rows:
            found.append(
                f"{name} ({what} read at {places}) is not on the settings page: read it in config/settings.py"
                " through config.env, with a comment above it"
            )
        elif not rows[name] or name in uncommented:
            found.append(
                f"{name} ({what} read at {places}) has no description: write a comment above the line"
                " that reads it in config/settings.py"
            )
    return found


def page(settings_file: Path = SETTINGS_FILE) -> str:
    return render(parse(settings_file.read_text()))


if __name__ == "__main__":
    # `python -m devtools.docs_settings`: the generated part of the page, or with --check
    # what is missing from it (exit 1).
    if sys.argv[1:] == ["--check"]:
        reference = parse(SETTINGS_FILE.read_text())
        issues = problems(reference, code_reads(ROOT), render(reference))
        print("\n".join(issues) or "every setting the code reads is on the page, described")
        sys.exit(1 if issues else 0)
    print(page())
