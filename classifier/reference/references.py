"""The order a message refers to: "ORD-123", "#1234", "order 3390", "pedido 5531",
"encomenda nº 77". Written as the business's own ids are (ORD-123) or as the bare number."""

from __future__ import annotations

import re

_PREFIXED = re.compile(r"\b(ord)[-\s]?(\d{1,12})\b", re.IGNORECASE)
_HASH = re.compile(r"#\s?(\d{3,12})\b")
_WORDED = re.compile(
    r"\b(?:order|pedido|orden|encomenda|ordem)\s+(?:n[o\u00ba\u00b0]?\.?\s*|number\s+|numero\s+|#\s*)?(\d{3,12})\b",
    re.IGNORECASE,
)


def order_reference(normalized: str) -> str | None:
    match = _PREFIXED.search(normalized)
    if match:
        return f"ORD-{match.group(2)}"
    match = _HASH.search(normalized) or _WORDED.search(normalized)
    return match.group(1) if match else None
