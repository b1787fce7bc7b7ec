"""What every handler's replies share: the per-language template table and the fillers.

Each handler module keeps its own sentences in a `Replies` table, so an intent is one module
and a translator edits the intent they are translating. Slots are filled only with the
business's name, catalog data, numbers and dates, never with the customer's own words. Every
language must define English's keys, checked when the handler module is imported; a language
a handler does not speak gets English.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

DEFAULT_LANGUAGE = "en"


class Replies:
    """One handler's templates, by language and then key."""

    def __init__(self, templates: Mapping[str, Mapping[str, str]]) -> None:
        if DEFAULT_LANGUAGE not in templates:
            raise ValueError(f"replies need {DEFAULT_LANGUAGE!r} templates, the fallback for every other language")
        keys = set(templates[DEFAULT_LANGUAGE])
        for language, texts in templates.items():
            if set(texts) != keys:
                raise ValueError(
                    f"replies in {language!r} define {sorted(texts)}, {DEFAULT_LANGUAGE!r} defines {sorted(keys)}"
                )
        self.templates = templates

    def languages(self) -> set[str]:
        return set(self.templates)

    def language_for(self, tag: str | None) -> str:
        """The reply language for a BCP-47 tag: its primary subtag if we have it, else English."""
        primary = (tag or "").split("-", 1)[0].strip().lower()
        return primary if primary in self.templates else DEFAULT_LANGUAGE

    def render(self, tag: str | None, key: str, **values: object) -> str:
        return self.templates[self.language_for(tag)][key].format(**values)


# Entity names are AI output rather than catalog data; cap them so an odd extraction cannot
# turn a reply into a wall of text.
_MAX_ECHOED_NAME = 60


def money(amount: Decimal, currency: str) -> str:
    """Two decimals and the currency code ("12.50 USD"); Decimal all the way, never float."""
    return f"{format(amount.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP), 'f')} {currency}"


def echoed_name(name: str) -> str:
    """A requested product name fit to repeat back: one line, bounded length."""
    flat = " ".join(name.split())
    return flat if len(flat) <= _MAX_ECHOED_NAME else flat[: _MAX_ECHOED_NAME - 1] + "…"


def when(moment: datetime) -> dict[str, str]:
    """Date, time and UTC offset as the customer gave them, not converted to our zone,
    because the customer thinks in their own clock."""
    offset = moment.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return {
        "date": moment.date().isoformat(),
        "time": moment.strftime("%H:%M"),
        "offset": f"UTC{sign}{hours:02d}:{mins:02d}",
    }
