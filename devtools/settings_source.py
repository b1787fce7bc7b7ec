"""Reading config/settings.py for the settings reference (devtools.docs_settings renders
and checks the page): every environment variable it reads through config.env, its default,
constraints and the comment that describes it, and the settings fixed in the code. Read with
:mod:`ast` and :mod:`tokenize`, never imported, so building the docs needs no SECRET_KEY and no
database. How a description is found is in devtools.docs_settings's docstring."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass, field

# config.env.Env's readers and what the page calls the value each accepts.
READERS = {
    "str": "string",
    "optional": "string, optional",
    "bool": "boolean",
    "int": "integer",
    "float": "number",
    "list": "comma-separated list",
    "url": "URL",
    "database": "PostgreSQL URL",
    "kafka_servers": "host:port[,host:port...]",
}
DJANGO_DOCS = "https://docs.djangoproject.com/en/5.2/ref/settings/#std-setting-{name}"
CELERY_DOCS = "https://docs.celeryq.dev/en/stable/userguide/configuration.html"
# Django settings that django.conf.global_settings leaves out because they have no default.
DJANGO_WITHOUT_DEFAULT = frozenset({"ROOT_URLCONF"})
SECTION = re.compile(r"^#\s*---\s*(?P<title>.*?)\s*-*\s*$")
NAME = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b|\b[A-Z]{4,}\b")
# The first section of a settings file that has no `# --- Title ---` line above its first setting.
FIRST_SECTION = "General"


@dataclass
class Variable:
    """One environment variable config/settings.py reads, as the page shows it."""

    name: str
    kind: str
    section: str
    line: int
    # (condition, default) per read: the condition is the `if` the read sits in, if any.
    defaults: list[tuple[str | None, str]] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    description: str = ""
    # The Django setting the value lands in (the assignment's target).
    setting: str | None = None


@dataclass
class CodeSetting:
    """A setting assigned in config/settings.py that is not an environment variable of its own."""

    name: str
    section: str
    line: int
    value: str
    description: str = ""
    reads: list[str] = field(default_factory=list)


@dataclass
class Reference:
    """What config/settings.py defines, in the file's order."""

    variables: dict[str, Variable]
    settings: dict[str, CodeSetting]
    sections: list[str]

    @property
    def names(self) -> set[str]:
        """Every name the page documents: environment variables and settings."""
        return set(self.variables) | set(self.settings)

    def undocumented(self) -> list[str]:
        """Environment variables and settings of our own that have no description."""
        missing = [name for name, variable in self.variables.items() if not variable.description]
        missing += [
            name for name, setting in self.settings.items() if not setting.description and not framework_link(name)
        ]
        return sorted(missing)


# --- Reading config/settings.py ------------------------------------------------------


@dataclass
class _Comments:
    """The comments of a source file, by line number."""

    full: dict[int, str]  # a line that is only a comment (section lines excluded)
    trailing: dict[int, str]  # a comment after code on the same line
    sections: dict[int, str]  # `# --- Title ---` lines
    blank: set[int]

    @classmethod
    def read(cls, source: str) -> _Comments:
        full: dict[int, str] = {}
        trailing: dict[int, str] = {}
        sections: dict[int, str] = {}
        lines = source.splitlines()
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type != tokenize.COMMENT:
                continue
            row = token.start[0]
            text = token.string
            if lines[row - 1].strip().startswith("#"):
                match = SECTION.match(text)
                if match:
                    sections[row] = match.group("title")
                else:
                    full[row] = text.lstrip("#").strip()
            else:
                trailing[row] = text.lstrip("#").strip()
        blank = {number for number, line in enumerate(lines, 1) if not line.strip()}
        return cls(full, trailing, sections, blank)

    def above(self, line: int) -> str:
        """The comment lines directly above `line`, joined."""
        collected: list[str] = []
        row = line - 1
        while row in self.full:
            collected.append(self.full[row])
            row -= 1
        return " ".join(reversed(collected)).strip()

    def blocks(self) -> Iterator[tuple[int, int, str]]:
        """Every run of full-line comments: (first line, last line, text)."""
        start = 0
        for row in sorted(self.full):
            if row - 1 not in self.full:
                start = row
            if row + 1 not in self.full:
                yield start, row, self.above(row + 1)

    def section_of(self, line: int) -> str:
        headers = [row for row in self.sections if row < line]
        return self.sections[max(headers)] if headers else FIRST_SECTION


def _constant(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def env_read(node: ast.AST) -> tuple[str, str] | None:
    """(variable, reader) when `node` reads the environment: ``env.<reader>("NAME", ...)``,
    ``os.environ.get("NAME")``, ``os.getenv("NAME")`` or ``os.environ["NAME"]``."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
        name = _constant(node.args[0])
        func = node.func
        if name is None:
            return None
        if isinstance(func.value, ast.Name) and func.value.id == "env" and func.attr in READERS:
            return name, func.attr
        if func.attr == "get" and _is_os_environ(func.value):
            return name, "os.environ"
        if func.attr == "getenv" and isinstance(func.value, ast.Name) and func.value.id == "os":
            return name, "os.environ"
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_os_environ(node.value):
        name = _constant(node.slice)
        if name is not None:
            return name, "os.environ"
    return None


def _is_os_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def _target_name(node: ast.AST) -> str | None:
    """The variable an assignment target finally writes: DATABASES for DATABASES["default"][...]."""
    while isinstance(node, (ast.Subscript, ast.Attribute, ast.Call)):
        node = node.value if not isinstance(node, ast.Call) else node.func
    return node.id if isinstance(node, ast.Name) else None


def _statements(
    body: list[ast.stmt], parents: tuple[ast.stmt, ...] = ()
) -> Iterator[tuple[ast.stmt, tuple[ast.stmt, ...]]]:
    """Module-level statements, and those inside module-level ``if``/``try`` blocks, with the
    compound statements around each (functions are not settings and are not entered)."""
    for statement in body:
        if isinstance(statement, ast.If):
            yield statement, parents
            yield from _statements(statement.body, (*parents, statement))
            yield from _statements(statement.orelse, (*parents, statement))
        elif isinstance(statement, ast.Try):
            yield statement, parents
            for block in (statement.body, statement.orelse, statement.finalbody):
                yield from _statements(block, (*parents, statement))
        else:
            yield statement, parents


def _reads_in(node: ast.AST) -> list[tuple[ast.AST, int, str, str]]:
    """(read, line, variable, reader) for every environment read inside `node`, outside nested
    compound statements (those are visited as statements of their own); the line is the one
    that names the variable, where the read's comment belongs."""
    found = []
    stack: list[ast.AST] = [node]
    while stack:
        current = stack.pop()
        read = env_read(current)
        if read:
            found.append((current, _line(_name_node(current)), *read))
        for child in ast.iter_child_nodes(current):
            if isinstance(child, (ast.If, ast.Try, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            stack.append(child)
    return sorted(found, key=lambda item: (item[1], getattr(item[0], "col_offset", 0)))


def _line(node: ast.AST) -> int:
    return int(getattr(node, "lineno", 0))


def _name_node(node: ast.AST) -> ast.AST:
    """The string that names the variable: its line is where the read's comment belongs."""
    if isinstance(node, ast.Call):
        return node.args[0]
    return node.slice if isinstance(node, ast.Subscript) else node


def _condition(statement: ast.stmt, parents: tuple[ast.stmt, ...]) -> str | None:
    """The ``if`` a statement sits in, as the page writes it: "`DEBUG`" or "not `DEBUG`"."""
    if not parents or not isinstance(parents[-1], ast.If):
        return None
    test = f"`{ast.unparse(parents[-1].test)}`"
    return test if statement in parents[-1].body else f"not {test}"


def _render_default(reader: str, call: ast.AST) -> str:
    """The default as one would write it in the environment, or what not setting it means."""
    if reader in ("optional", "os.environ"):
        return "unset"
    assert isinstance(call, ast.Call)
    keywords = {keyword.arg: keyword.value for keyword in call.keywords}
    required = keywords.get("required")
    if isinstance(required, ast.Constant) and required.value is True:
        return "required"
    default = call.args[1] if len(call.args) > 1 else keywords.get("default")
    if default is None:
        # env.str without a default raises for an unset variable: it is required.
        return "required" if reader == "str" else "unset"
    return _render_value(default)


# What _evaluate returns for an expression that is not a literal.
_UNKNOWN = object()


def _render_value(node: ast.AST) -> str:
    """A literal as the environment would spell it; another setting as a link to its row;
    any other expression as the code that computes it."""
    value = _evaluate(node)
    if value is _UNKNOWN:
        if isinstance(node, ast.Name) and node.id.isupper():
            return f"[`{node.id}`](#{node.id})"
        return f"`{ast.unparse(node)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (list, tuple)):
        return f"`{','.join(str(item) for item in value)}`" if value else "empty"
    if isinstance(value, str) and value == "":
        return "empty"
    return f"`{value}`"


def _evaluate(node: ast.AST) -> object:
    """A literal, or arithmetic on literals (``1024 * 1024``); anything else is unknown."""
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Add, ast.Sub)):
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(left, int) and isinstance(right, int) and not isinstance(left, bool):
            if isinstance(node.op, ast.Mult):
                return left * right
            return left + right if isinstance(node.op, ast.Add) else left - right
    return _UNKNOWN


def _constraints(reader: str, call: ast.AST) -> list[str]:
    if not isinstance(call, ast.Call):
        return []
    found = []
    for keyword in call.keywords:
        if keyword.arg == "minimum":
            found.append(f"≥ {ast.unparse(keyword.value)}")
        elif keyword.arg == "schemes":
            value = _evaluate(keyword.value)
            if isinstance(value, tuple):
                found.append("scheme " + " or ".join(f"`{scheme}`" for scheme in value))
        elif keyword.arg == "credentials" and isinstance(keyword.value, ast.Constant) and keyword.value.value is False:
            found.append("no `user:password@`")
    return found


def parse(source: str) -> Reference:
    """Every environment variable and setting a settings module's source defines."""
    tree = ast.parse(source)
    comments = _Comments.read(source)
    variables: dict[str, Variable] = {}
    settings: dict[str, CodeSetting] = {}
    blocks = list(comments.blocks())

    for statement, parents in _statements(tree.body):
        # A compound statement's body is visited statement by statement; only an `if`'s own
        # test is read here.
        if isinstance(statement, ast.If):
            reads = _reads_in(statement.test)
        elif isinstance(statement, ast.Try):
            reads = []
        else:
            reads = _reads_in(statement)
        targets = _targets(statement)
        names_read = {name for _, _, name, _ in reads}
        for node, line, name, reader in reads:
            variable = variables.get(name)
            if variable is None:
                variable = variables[name] = Variable(name, reader, comments.section_of(line), line)
            variable.defaults.append((_condition(statement, parents), _render_default(reader, node)))
            for constraint in _constraints(reader, node):
                if constraint not in variable.constraints:
                    variable.constraints.append(constraint)
            if variable.setting is None and targets:
                variable.setting = targets[0]
            if not variable.description:
                variable.description = _describe(name, line, statement, parents, names_read, comments, blocks)
        for target in targets:
            if not target.isupper() or target in names_read:
                continue
            if target in settings:
                # Written again (DATABASES["default"]["OPTIONS"] = ...): more variables go into it.
                settings[target].reads = sorted({*settings[target].reads, *names_read})
                continue
            value = getattr(statement, "value", None)
            settings[target] = CodeSetting(
                target,
                comments.section_of(statement.lineno),
                statement.lineno,
                ast.unparse(value) if isinstance(value, ast.expr) else "",
                _describe(target, statement.lineno, statement, parents, set(), comments, blocks),
                sorted(names_read),
            )
    # A variable the code reads twice (SECRET_KEY, with and without DEBUG) is one row: the first
    # read's statement decides where its value lands, and an env-read name is never also a
    # setting "fixed in the code".
    for name in variables:
        settings.pop(name, None)
    order = [FIRST_SECTION, *comments.sections.values()]
    used = {variable.section for variable in variables.values()} | {s.section for s in settings.values()}
    return Reference(variables, settings, [title for title in order if title in used])


def _targets(statement: ast.stmt) -> list[str]:
    if isinstance(statement, ast.Assign):
        names = [_target_name(target) for target in statement.targets]
    elif isinstance(statement, (ast.AnnAssign, ast.AugAssign)):
        names = [_target_name(statement.target)]
    else:
        return []
    return [name for name in names if name]


def _describe(
    name: str,
    line: int,
    statement: ast.stmt,
    parents: tuple[ast.stmt, ...],
    names_read: set[str],
    comments: _Comments,
    blocks: list[tuple[int, int, str]],
) -> str:
    # 1. A comment at the end of the line itself.
    if line in comments.trailing:
        return comments.trailing[line]
    # 2. The comment directly above the line (inside a statement, above one argument).
    if line != statement.lineno and comments.above(line):
        return comments.above(line)
    # 3. The comment above the statement, or above an `if` around it, unless it is about
    #    another of the statement's variables.
    for owner in (statement, *reversed(parents)):
        text = comments.above(owner.lineno)
        if text:
            named = set(NAME.findall(text)) & names_read
            if not named or name in named:
                return text
            break
    # 4. A block of the same section that names it and either stands alone (a blank line
    #    after it: it is about no one line) or sits above it in its paragraph (no blank line
    #    in between: a comment that opens a group of settings).
    section = comments.section_of(line)
    candidates = [
        (start, text)
        for start, end, text in blocks
        if comments.section_of(start) == section
        and re.search(rf"\b{re.escape(name)}\b", text)
        and (end + 1 in comments.blank or (end < line and not comments.blank.intersection(range(end + 1, line))))
    ]
    if candidates:
        before = [item for item in candidates if item[0] < line]
        return (before[-1] if before else candidates[0])[1]
    return ""


def framework_link(name: str) -> str:
    """A link to Django's or Celery's documentation when the setting is theirs, else ""."""
    from django.conf import global_settings

    if hasattr(global_settings, name) or name in DJANGO_WITHOUT_DEFAULT:
        return f"Django's [`{name}`]({DJANGO_DOCS.format(name=name)})"
    if name.startswith("CELERY_"):
        from celery.app.defaults import SETTING_KEYS

        # config/celery.py reads the CELERY_ names with namespace="CELERY": CELERY_TASK_ACKS_LATE
        # is Celery's task_acks_late. CELERY_DB_REUSE_MAX, which only Celery's Django fixup reads,
        # is not in its configuration reference and needs a comment of its own.
        key = name.removeprefix("CELERY_").lower()
        if key in SETTING_KEYS:
            return f"Celery's `{key}` ([configuration]({CELERY_DOCS}))"
    return ""
