"""`manage.py replay`'s time range: timestamps no datetime can hold are sorted by
their milliseconds. (Replays through a real ingest: tests/integration/recovery/test_replay.py.)"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_time_range_sorts_timestamps_no_datetime_can_hold_by_their_milliseconds():
    from whatsapp.kafka import Record
    from whatsapp.recovery.kafka_range import Selection
    from whatsapp.recovery.replay import parse_when

    def record(millis: int | None) -> Record:
        return Record("t", 0, 0, b"{}", timestamp_ms=millis)

    since = Selection("t", since=parse_when("2h"))
    until = Selection("t", until=parse_when("2h"))
    year_10000, before_1970 = record(253_402_300_800_000), record(-5_000)
    assert (since.wants(year_10000), until.wants(year_10000)) == (True, False)
    assert (since.wants(before_1970), until.wants(before_1970)) == (False, True)
    assert not since.wants(record(None)) and not until.wants(record(None))  # no timestamp at all
