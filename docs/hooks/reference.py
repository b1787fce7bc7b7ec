"""MkDocs hook: the API reference, one generated page per runtime module.

The modules are found when the site is built (devtools.docs_reference walks the packages),
so the nav entry ``reference/`` in mkdocs.yml stands for whatever exists: a module that
moves or appears gets its page, and `mkdocs build --strict` fails when prose links to a
page that no longer exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

from devtools import docs_reference

# The nav entry in mkdocs.yml that the generated tree replaces.
PLACEHOLDER = docs_reference.PREFIX + "/"


def _root(config: MkDocsConfig) -> Path:
    return Path(config.config_file_path).resolve().parent


def _replace(items: list[Any], tree: list[Any]) -> bool:
    """Put the generated tree where the placeholder is in the nav; False if it is not there."""
    for index, item in enumerate(items):
        if isinstance(item, dict):
            for title, value in item.items():
                if value == PLACEHOLDER:
                    items[index] = {title: [f"{docs_reference.PREFIX}/index.md", *tree]}
                    return True
                if isinstance(value, list) and _replace(value, tree):
                    return True
    return False


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    modules = docs_reference.modules(_root(config))
    if not config.nav or not _replace(config.nav, docs_reference.nav(modules)):
        raise ValueError(f"mkdocs.yml: the nav needs an entry {PLACEHOLDER!r} for the API reference")
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for module in docs_reference.modules(_root(config)):
        files.append(File.generated(config, module.page, content=module.markdown()))
    return files


def on_serve(server: Any, config: MkDocsConfig, builder: Any) -> Any:
    # `mkdocs serve` rebuilds when a module's docstring changes, not only the Markdown.
    for package in docs_reference.RUNTIME_PACKAGES:
        server.watch(str(_root(config) / package))
    return server
