"""MkDocs hook: the settings reference's tables, generated from config/settings.py.

docs/settings.md holds the prose; the marker line in it is replaced at build time by what
devtools.docs_settings reads from config/settings.py (every environment variable, its type,
default and the comment above it), so the page cannot drift from the code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError

from devtools import docs_settings

PAGE = "settings.md"
MARKER = "<!-- generated: the settings of config/settings.py -->"


def on_page_markdown(markdown: str, page: Any, config: MkDocsConfig, **kwargs: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"docs/{PAGE} lost its marker line {MARKER!r}: the settings tables have nowhere to go")
    settings_file = Path(config.config_file_path).resolve().parent / "config" / "settings.py"
    return markdown.replace(MARKER, docs_settings.page(settings_file))
