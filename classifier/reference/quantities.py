"""How many of a product a customer asked for: digits, number words in en/es/pt, dozens,
and "2x" / "x2" forms, read next to the product's mention."""

from __future__ import annotations

import re

_WORDS: dict[str, dict[str, int]] = {
    "en": {
        "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
        "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
        "thirty": 30, "forty": 40, "fifty": 50, "hundred": 100, "couple": 2, "dozen": 12,
    },
    "es": {
        "un": 1, "una": 1, "uno": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6, "siete": 7,
        "ocho": 8, "nueve": 9, "diez": 10, "once": 11, "doce": 12, "quince": 15, "veinte": 20,
        "treinta": 30, "cuarenta": 40, "cincuenta": 50, "cien": 100, "docena": 12,
    },
    "pt": {
        "um": 1, "uma": 1, "dois": 2, "duas": 2, "tres": 3, "quatro": 4, "cinco": 5, "seis": 6, "sete": 7,
        "oito": 8, "nove": 9, "dez": 10, "onze": 11, "doze": 12, "quinze": 15, "vinte": 20,
        "trinta": 30, "quarenta": 40, "cinquenta": 50, "cem": 100, "duzia": 12,
    },
}  # fmt: skip
# "half a dozen", "media docena", "meia duzia".
_HALF = {"half", "media", "meia"}
# Words that may stand between a count and the product ("2 bags of", "3 muffins de").
_FILLERS = {"of", "de", "do", "da", "more", "mas", "mais", "x", "bags", "boxes", "pieces", "unidades", "loaves"}
_MULTIPLIER = re.compile(r"^(\d{1,5})x$|^x(\d{1,5})$")
# At most this many filler words between a count and its product.
_REACH = 2


def number(token: str, language: str) -> int | None:
    """The count one token stands for, or None."""
    if token.isdigit() and len(token) <= 5:
        return int(token)
    match = _MULTIPLIER.match(token)
    if match:
        return int(match.group(1) or match.group(2))
    words = _WORDS.get(language, {})
    if token in words:
        return words[token]
    # A customer writing in one language borrows number words from another (Spanglish, portunhol),
    # except the articles and "dos" (Portuguese "of the"), which would count what is not a count.
    if token in {"a", "an", "un", "um", "dos", "once"}:
        return None
    for other in _WORDS.values():
        if token in other:
            return other[token]
    return None


def quantity_before(toks: list[str], start: int, language: str) -> int | None:
    """The count just before the product mention that begins at token `start`."""
    index = start - 1
    skipped = 0
    while index >= 0 and skipped <= _REACH:
        token = toks[index]
        if language == "pt" and token == "dos":
            index -= 1
            skipped += 1
            continue
        if token.startswith("x") and token[1:].isdigit():
            return None  # "SD-01 x3, BG-03": the x3 is the previous product's count
        value = number(token, language)
        if value is not None:
            if value == 12 and token in {"dozen", "docena", "duzia"}:
                half = _HALF.intersection(toks[max(0, index - 2) : index])
                return 6 if half else 12
            return value
        if token not in _FILLERS:
            return None
        index -= 1
        skipped += 1
    return None


def quantity_after(toks: list[str], end: int) -> int | None:
    """A count written after the product: "SD-01 x2", "croissant x 3"."""
    if end < len(toks):
        match = _MULTIPLIER.match(toks[end])
        if match and match.group(2):
            return int(match.group(2))
        if toks[end] == "x" and end + 1 < len(toks) and toks[end + 1].isdigit():
            return int(toks[end + 1])
    return None
