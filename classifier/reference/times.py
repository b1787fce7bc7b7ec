"""When a customer wants to be called, as an ISO-8601 moment with the offset of the message.

The day and the hour are found by words in en/es/pt (dateparser's own search misreads
"a las 3 de la tarde" and "sexta às 10h"), and dateparser does the calendar: the next Friday,
tomorrow, in two hours, counted from the message's received_at. Times are read in the offset
received_at carries (the webhook's is UTC); a business time zone can replace it there.

Missing parts are filled the way a shop would: a day without an hour means 10:00, "morning" 10:00,
"afternoon" 15:00, "evening" 19:00; an hour without a day is today if still ahead, else tomorrow;
a bare "at 3" is 15:00 (1-7 are afternoon hours in a shop's day).
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta

import dateparser

_DAY_AFTER = re.compile(r"\b(day after tomorrow|pasado manana|depois de amanha)\b")
_TOMORROW = re.compile(r"\b(tomorrow|tmrw|tmr|2moro|amanha)\b|(?<!la )(?<!por la )(?<!de la )\bmanana\b")
_TODAY = re.compile(r"\b(today|tonight|this (morning|afternoon|evening)|hoy|esta noche|esta tarde|hoje)\b")
_WEEKDAYS = {
    "monday": "monday", "tuesday": "tuesday", "wednesday": "wednesday", "thursday": "thursday",
    "friday": "friday", "saturday": "saturday", "sunday": "sunday",
    "lunes": "monday", "martes": "tuesday", "miercoles": "wednesday", "jueves": "thursday",
    "viernes": "friday", "sabado": "saturday", "domingo": "sunday",
    "segunda": "monday", "terca": "tuesday", "quarta": "wednesday", "quinta": "thursday", "sexta": "friday",
}  # fmt: skip
_WEEKDAY = re.compile(r"\b(" + "|".join(_WEEKDAYS) + r")(?:-feira)?\b")
_IN_HOURS = re.compile(
    r"\b(?:in|en|daqui a|em|dentro de)\s+(\d{1,2}|an?|one|una|uma|dos|duas|two)\s*"
    r"(hours?|hrs?|h|horas?|minutes?|mins?|minutos?)\b"
)
_SMALL_NUMBERS = {"a": 1, "an": 1, "one": 1, "una": 1, "uma": 1, "two": 2, "dos": 2, "duas": 2}

_CLOCK = re.compile(r"\b(\d{1,2})\s*(?::|h)\s*(\d{2})\b")
_AMPM = re.compile(r"\b(\d{1,2})\s*(am|pm|a\.m\.|p\.m\.)")
_HOUR_H = re.compile(r"\b(\d{1,2})\s*h(?:rs)?\b")
_AT_HOUR = re.compile(
    r"\b(?:at|a las|a la|as|at around|around|tipo|after|despues de las|depois das)\s+"
    r"(\d{1,2})\b(?!\s*(?:x|min|hour|hora|pm|am))"
)
_NOON = re.compile(r"\b(noon|midday|mediodia|meio-dia|meio dia)\b")
_MORNING = re.compile(r"\b(morning|por la manana|de la manana|la manana|de manha|da manha|manha|cedo)\b")
_AFTERNOON = re.compile(r"\b(afternoon|tarde)\b")
_EVENING = re.compile(r"\b(evening|tonight|noche|noite)\b")
_PM_HINT = re.compile(r"\b(de la tarde|da tarde|pm|de la noche|da noite)\b")

DEFAULT_HOUR = time(10, 0)


def preferred_time(normalized: str, received_at: datetime) -> datetime | None:
    """The moment asked for, aware, in received_at's offset; None when the message names none."""
    local = received_at
    relative = _IN_HOURS.search(normalized)
    if relative:
        amount = relative.group(1)
        count = int(amount) if amount.isdigit() else _SMALL_NUMBERS.get(amount, 1)
        unit = relative.group(2)
        delta = timedelta(minutes=count) if unit.startswith("min") else timedelta(hours=count)
        return (local + delta).replace(second=0, microsecond=0)

    day = _day(normalized, local)
    clock = _clock(normalized)
    if day is None and clock is None:
        return None
    if day is None:
        assert clock is not None
        moment = datetime.combine(local.date(), clock, tzinfo=local.tzinfo)
        return moment if moment > local else moment + timedelta(days=1)
    return datetime.combine(day, clock or DEFAULT_HOUR, tzinfo=local.tzinfo)


def _day(normalized: str, local: datetime) -> datetime | None:
    phrase = None
    if _DAY_AFTER.search(normalized):
        phrase = "day after tomorrow"
    elif _TOMORROW.search(normalized):
        phrase = "tomorrow"
    elif _TODAY.search(normalized):
        phrase = "today"
    else:
        match = _WEEKDAY.search(normalized)
        if match:
            phrase = _WEEKDAYS[match.group(1)]
    if phrase is None:
        return None
    base = local.replace(tzinfo=None)
    parsed = dateparser.parse(phrase, languages=["en"], settings={"RELATIVE_BASE": base, "PREFER_DATES_FROM": "future"})
    if parsed is None:
        return None
    if parsed.date() == base.date() and phrase not in ("today",):
        parsed += timedelta(days=7)  # "tuesday" said on a Tuesday is next week's
    return parsed


def _clock(normalized: str) -> time | None:
    match = _CLOCK.search(normalized)
    if match:
        return _time(int(match.group(1)), int(match.group(2)), pm=bool(_PM_HINT.search(normalized)))
    match = _AMPM.search(normalized)
    if match:
        hour = int(match.group(1)) % 12 + (12 if match.group(2).startswith("p") else 0)
        return _time(hour, 0, pm=False)
    match = _HOUR_H.search(normalized)
    if match:
        return _time(int(match.group(1)), 0, pm=bool(_PM_HINT.search(normalized)))
    match = _AT_HOUR.search(normalized)
    if match:
        hour = int(match.group(1))
        pm = bool(_PM_HINT.search(normalized)) or 1 <= hour <= 7
        return _time(hour, 0, pm=pm)
    if _NOON.search(normalized):
        return time(12, 0)
    if _EVENING.search(normalized):
        return time(19, 0)
    if _AFTERNOON.search(normalized):
        return time(15, 0)
    if _MORNING.search(normalized):
        return DEFAULT_HOUR
    return None


def _time(hour: int, minute: int, *, pm: bool) -> time | None:
    if pm and 1 <= hour < 12:
        hour += 12
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        return None
    return time(hour, minute)
