"""Griffe extension: show the project's docstrings as the text they are.

The docstrings are plain text written for the source, not Markdown: they quote task ids as
``"<processing_id>:<run>:<step>"`` and name ``__init__`` and ``_claim``. Rendered as Markdown,
``<run>`` would be taken for an HTML tag (and vanish in the browser) and ``__init__`` would turn
bold. So, outside code spans and indented code blocks, ``<`` is written as an entity and ``_`` is
escaped; everything else (backticks, ``*emphasis*``, lists, the indented state diagrams) is
left to Markdown, which reads it as the author meant. The docstrings themselves stay untouched.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

# A code span (any run of backticks up to the same run), or a <scheme://...> autolink: kept as is.
_KEEP = re.compile(r"(`+)(?:.+?)(?<!`)\1(?!`)|<https?://[^>\s]+>", re.S)


def _escape_prose(text: str) -> str:
    out: list[str] = []
    position = 0
    for match in _KEEP.finditer(text):
        out.append(_escape_plain(text[position : match.start()]))
        out.append(match.group(0))
        position = match.end()
    out.append(_escape_plain(text[position:]))
    return "".join(out)


def _escape_plain(text: str) -> str:
    return text.replace("<", "&lt;").replace("_", r"\_")


def escape(docstring: str) -> str:
    """The docstring with its prose escaped and its indented code blocks left alone.

    A line indented four spaces or more is code when it follows a blank line or another code
    line, as Markdown reads it; prose paragraphs are escaped whole, so a code span that wraps
    over a line break is still recognised.
    """
    lines = docstring.splitlines()
    blocks: list[tuple[bool, list[str]]] = []
    previous_blank = True
    in_code = False
    for line in lines:
        blank = not line.strip()
        indented = line.startswith("    ") and not blank
        if indented and (previous_blank or in_code):
            in_code = True
        elif not blank:
            in_code = False
        if not blocks or blocks[-1][0] != in_code:
            blocks.append((in_code, []))
        blocks[-1][1].append(line)
        previous_blank = blank
    return "\n".join("\n".join(block) if is_code else _escape_prose("\n".join(block)) for is_code, block in blocks)


class PlainDocstrings(griffe.Extension):
    """Escapes every docstring once the package's object tree is complete."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        # Once per object, however often griffe reports it.
        if obj.docstring is not None and not obj.extra["plain_docstrings"].get("escaped"):
            obj.docstring.value = escape(obj.docstring.value)
            obj.extra["plain_docstrings"]["escaped"] = True
