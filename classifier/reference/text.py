"""The one normal form every rule reads: lower case, accents off, so "Cuánto" and "cuanto"
(customers often type without accents) are the same word to every module."""

from __future__ import annotations

import re
import unicodedata

_TOKEN = re.compile(r"#\d+|[a-z0-9]+(?:-[a-z0-9]+)*")
_RAW_TOKEN = re.compile(r"#\d+|[^\W_]+(?:-[^\W_]+)*")


# The request contract allows 4,096 characters of text; NFKD can grow one character into
# eighteen (U+FDFA), so the normal form is capped at twice the contract's text: every rule
# then reads a bounded text, whatever characters it was written in.
MAX_TEXT = 4096
MAX_NORMALIZED = 2 * MAX_TEXT


def normalize(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text[:MAX_TEXT].lower())[: 2 * MAX_NORMALIZED]
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))[:MAX_NORMALIZED]


def tokens(normalized: str) -> list[str]:
    return _TOKEN.findall(normalized)


def raw_tokens(text: str) -> list[str]:
    """The words of text as written (accents kept), lower-cased; one per normalized token."""
    return _RAW_TOKEN.findall(text.lower())


def singular(word: str) -> str:
    """A crude plural strip for en/es/pt nouns, applied to both sides of a comparison
    ("alfajores" ~ "alfajor", "empanadas" ~ "empanada", "brownies" ~ "brownie")."""
    if len(word) > 4 and word.endswith("es") and word[-3] in "rlnd":
        return word[:-2]
    if len(word) > 3 and word.endswith("s"):
        return word[:-1]
    return word
