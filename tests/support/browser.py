"""What the browser tests share: Debian's Chromium, driven by Playwright.

Without /usr/bin/chromium (or the playwright package) a browser test is skipped, and
pytest's -ra summary says why; .ci/run installs the package."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


def missing() -> str | None:
    """Why a browser cannot be driven here, or None."""
    if not CHROMIUM.exists():
        return (
            f"browser test skipped: {CHROMIUM} not found; install Debian's chromium package "
            "(apt-get install chromium), as .ci/run does"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "browser test skipped: the Python package playwright is missing (make install)"
    return None


needs_browser = pytest.mark.skipif(missing() is not None, reason=missing() or "")
