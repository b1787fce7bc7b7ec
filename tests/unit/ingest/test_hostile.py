"""Hostile record contents handled in this process, on the real Postgres and Redis:
a record failing at hand-off ends as one dead letter, a dead letter's hostile
metadata survives its requeue, and timestamps and headers of any shape are read
without raising. (A real `ingest_kafka` reading them:
tests/integration/ingest/test_ingest_hostile.py.)"""

from __future__ import annotations

import json

import pytest

from dlq.models import DeadLetter
from dlq.requeue import RequeueRefused, requeue
from leads.models import Business
from tests.support.events import TENANT_ID, encode, event
from whatsapp.ingest.intake import take_in
from whatsapp.kafka import Record, datetime_from_millis, headers_from_json
from whatsapp.models import ProcessedMessage

pytestmark = pytest.mark.django_db(transaction=True)

YEAR_10000 = 253_402_300_800_000  # the first millisecond past 9999-12-31
FAR_FUTURE = [YEAR_10000, 9_000_000_000_000_000, 2**63 - 1]
NEGATIVE = [-5_000, -(2**62)]


def _valid(pid: str, **overrides) -> bytes:
    return encode(event(pid, lead_id=f"lead-{pid}", **overrides))


def test_a_dead_letter_with_hostile_metadata_is_requeued_with_it(business):
    """The safe forms round-trip through requeue: base64 headers, raw milliseconds."""
    headers = [("x-note", b"a\x00b"), ("x-bin", b"\xff\xfe"), ("traceparent", b"\xff" * 1000)]
    record = Record(
        topic="t.hostile",
        partition=0,
        offset=5,
        value=_valid("late-biz", business_id="late-biz"),
        key=b"\x00",
        headers=headers,
        timestamp=None,
        timestamp_ms=YEAR_10000,
    )
    take_in([record])
    entry = DeadLetter.objects.get(kafka_offset=5)
    assert (entry.reason, entry.kafka_timestamp, entry.kafka_timestamp_ms) == ("unknown_business", None, YEAR_10000)
    assert headers_from_json(entry.kafka_headers) == headers
    with pytest.raises(RequeueRefused, match="unknown_business"):
        requeue(entry.pk, by="test")

    Business.objects.create(business_id="late-biz", tenant_id=TENANT_ID, display_name="Late")
    requeue(entry.pk, by="test")
    row = ProcessedMessage.objects.get(processing_id="late-biz")
    assert (row.kafka_partition, row.kafka_offset, row.kafka_timestamp, row.kafka_timestamp_ms) == (
        0,
        5,
        None,
        YEAR_10000,
    )


# --- a record that fails inside intake, past the contract ------------------------------------


def test_a_record_failing_at_hand_off_ends_as_one_dead_letter(business, redis_client):
    """A record whose row is stored but cannot be handed to Celery is dead-lettered and its
    never-started row removed with it: one outcome, and a requeue takes it in again."""
    from whatsapp.ingest.isolate import HAND_OFF, dead_letter_unprocessable

    record = Record(
        topic="t.handoff",
        partition=2,
        offset=9,
        value=_valid("handoff-1"),
        key=b"\xff",
        headers=[("h", b"\x00")],
        timestamp_ms=-5_000,
    )
    assert take_in([record]).new == [("handoff-1", 1)]
    result = dead_letter_unprocessable(record, KeyError("customer text must not show"), stage=HAND_OFF)
    assert result.unprocessable == [("t.handoff", 2, 9)]
    assert not ProcessedMessage.objects.filter(processing_id="handoff-1").exists()
    entry = DeadLetter.objects.get()
    assert (entry.reason, entry.error_class, entry.kafka_timestamp_ms) == ("unprocessable", "KeyError", -5_000)
    assert "customer text" not in entry.error_message + entry.traceback
    assert "handed to the pipeline" in entry.error_message
    # Read again after a crash: no second dead letter.
    dead_letter_unprocessable(record, KeyError("again"), stage=HAND_OFF)
    assert DeadLetter.objects.count() == 1
    requeue(entry.pk, by="test")
    assert ProcessedMessage.objects.get(processing_id="handoff-1").kafka_offset == 9


def test_an_isolated_batch_checks_each_record_against_the_contract_once(business, redis_client, monkeypatch):
    """Splitting a failing batch down to its bad record re-runs the transaction at every level,
    but each record's contract outcome (parsed event or rejection) is kept from the first."""
    from whatsapp.ingest import intake, validate
    from whatsapp.ingest.isolate import take_in_and_hand_off

    parsed: list[bytes] = []
    real_parse, real_insert = validate.parse_event, intake.insert_inbox_rows

    def counting_parse(value):
        parsed.append(value)
        return real_parse(value)

    def insert_failing_on_the_poison(rows):
        if any(row["processing_id"] == "iso-05" for row in rows):
            raise KeyError("a fault inside intake, past the contract")
        return real_insert(rows)

    monkeypatch.setattr(validate, "parse_event", counting_parse)
    monkeypatch.setattr(intake, "insert_inbox_rows", insert_failing_on_the_poison)
    records = [Record("t.iso", 0, i, _valid(f"iso-{i:02d}")) for i in range(16)]
    records.append(Record("t.iso", 0, 16, b"{not json"))  # a rejection is kept too

    result = take_in_and_hand_off(records)

    assert len(parsed) == len(records), "every record parsed once, however deep the split"
    assert result.unprocessable == [("t.iso", 0, 5)]
    assert set(ProcessedMessage.objects.values_list("processing_id", flat=True)) == {
        f"iso-{i:02d}" for i in range(16) if i != 5
    }
    assert sorted(DeadLetter.objects.values_list("kafka_offset", "reason")) == [
        (5, "unprocessable"),
        (16, "invalid_payload"),
    ]


# --- reading metadata never raises -------------------------------------------------------------
@pytest.mark.parametrize("millis", [None, 0, -1, *NEGATIVE, *FAR_FUTURE, -(2**63)])
def test_timestamps_no_datetime_can_hold_give_none(millis):
    assert datetime_from_millis(millis) is None


def test_timestamps_in_range_give_their_datetime():
    assert datetime_from_millis(1).isoformat() == "1970-01-01T00:00:00.001000+00:00"
    assert datetime_from_millis(YEAR_10000 - 1).isoformat() == "9999-12-31T23:59:59.999000+00:00"


def test_headers_round_trip_whatever_they_hold():
    headers = [
        ("plain", b"text"),
        ("nul", b"\x00"),
        ("bin", bytes(range(256))),
        ("none", None),
        ("k\x00ey", b"v"),
        ("surrogate\udcff", b"v"),
        ("", b""),
        ("ünï", "ünï".encode()),
    ]
    stored = Record(topic="t", partition=0, offset=0, value=None, headers=headers).headers_json()
    assert json.loads(json.dumps(stored)) == stored
    assert "\\u0000" not in json.dumps(stored)  # Postgres's jsonb refuses it
    assert headers_from_json(stored) == headers
    assert stored[0] == {"key": "plain", "value": "text"}
    assert stored[4] == {"key_b64": "awBleQ==", "value": "v"}
    assert stored[5] == {"key_b64": "c3Vycm9nYXRl/w==", "value": "v"}  # a name that was not UTF-8: its bytes
