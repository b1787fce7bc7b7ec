"""No record can stop ingest: whatever a Kafka record carries (its value, key,
headers, timestamp, trace headers), it ends as an inbox row or a dead letter,
and the records around it go on. Against the real broker, Postgres, Redis and
a Celery worker, with the real `ingest_kafka` command."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field

import pytest

from dlq.models import DeadLetter
from dlq.requeue import RequeueRefused, requeue
from tests.support import kafka
from tests.support.events import encode, event, now_iso
from tests.support.observability import json_lines
from tests.support.poison import POISON, remove_poison_trigger
from tests.support.processes import wait_until
from whatsapp.kafka import datetime_from_millis, headers_from_json
from whatsapp.models import ProcessedMessage

pytestmark = pytest.mark.django_db(transaction=True)

UPSTREAM_TRACE = "0af7651916cd43dd8448eb211c80319c"
SENTRY_TRACE = f"{UPSTREAM_TRACE}-b7ad6b7169203331-1".encode()
YEAR_10000 = 253_402_300_800_000  # the first millisecond past 9999-12-31
FAR_FUTURE = [YEAR_10000, 9_000_000_000_000_000, 2**63 - 1]
NEGATIVE = [-5_000, -(2**62)]
INBOX = "inbox"


@dataclass
class Hostile:
    """One hostile record and what it must become."""

    label: str
    value: bytes
    expect: str  # INBOX or the dead letter's reason
    key: bytes | None = None
    headers: list[tuple[str, bytes | None]] | None = None
    timestamp: int | None = None
    raw_headers: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    """Header names no client library sends (not UTF-8): produced over the wire protocol."""


def _valid(pid: str, **overrides) -> bytes:
    return encode(event(pid, lead_id=f"lead-{pid}", **overrides))


def _with_text(pid: str, text: str) -> bytes:
    """A valid event's JSON with `text` spliced in by hand (duplicate keys, numbers json.dumps will not write)."""
    body = encode(event(pid, lead_id=f"lead-{pid}")).decode()
    return (body[:-1] + ", " + text + "}").encode()


def _offset_event(pid: str, offset: str, where: str = "received_at") -> bytes:
    moment = now_iso()[:19] + offset  # a time a minute ago, with the offset given
    if where == "received_at":
        return _valid(pid, message={"text": "hello", "received_at": moment})
    return _valid(pid, intent="SCHEDULE_CALL", entities={"preferred_time": moment})


def hostile_records() -> list[Hostile]:
    nul_headers = [("x-note", b"before\x00after"), ("x-empty", None)]
    bad_utf8_headers = [("x-bin", b"\xff\xfe\xfd\x00"), ("x-latin1", "café".encode("latin-1"))]
    garbage_trace = [
        [("sentry-trace", b"\x00\xff" * 40)],
        [("traceparent", b"00-" + b"\xff" * 100_000)],
        [("sentry-trace", SENTRY_TRACE), ("baggage", b"sentry-sample_rand=nan,sentry-sample_rate=inf")],
        [("sentry-trace", SENTRY_TRACE), ("baggage", b"\xff\x00" * 10_000)],
        [("sentry-trace", SENTRY_TRACE[:20] + b"\x00" + SENTRY_TRACE[21:])],
    ]
    unknown = {"business_id": "no-such-business"}
    records: list[Hostile] = []
    # Valid events with hostile metadata: each is taken in and processed.
    records += [
        Hostile("nul header", _valid("h-nul-header"), INBOX, headers=nul_headers),
        Hostile("non-utf8 header", _valid("h-bad-utf8-header"), INBOX, headers=bad_utf8_headers),
        Hostile(
            "huge header", _valid("h-huge-header"), INBOX, headers=[("x-huge", random.Random(3).randbytes(300_000))]
        ),
        Hostile("nul key", _valid("h-nul-key"), INBOX, key=b"lead\x00key"),
        Hostile("non-utf8 key", _valid("h-bad-key"), INBOX, key=b"\xff\xfe\x00"),
        Hostile(
            "non-utf8 header name",
            _valid("h-raw-header-name"),
            INBOX,
            raw_headers=[(b"\xff\xfename", b"v"), (b"ok", b"\x00")],
        ),
        Hostile(
            "everything at once",
            _valid("h-everything"),
            INBOX,
            key=b"\x00\xff",
            headers=nul_headers + bad_utf8_headers + garbage_trace[2],
            timestamp=YEAR_10000,
        ),
    ]
    records += [
        Hostile(f"timestamp {ts}", _valid(f"h-ts-{i}"), INBOX, timestamp=ts)
        for i, ts in enumerate(FAR_FUTURE + NEGATIVE)
    ]
    records += [
        Hostile(f"garbage trace {i}", _valid(f"h-trace-{i}"), INBOX, headers=h) for i, h in enumerate(garbage_trace)
    ]
    # Rejected records with hostile metadata: each is dead-lettered with its metadata kept.
    records += [
        Hostile("rejected, nul header", _valid("r-nul-header", **unknown), "unknown_business", headers=nul_headers),
        Hostile(
            "rejected, non-utf8 header", _valid("r-bad-header", **unknown), "unknown_business", headers=bad_utf8_headers
        ),
        Hostile("rejected, nul key", b"not json \x00", "invalid_payload", key=b"\x00\x00"),
        Hostile("rejected, far future", _valid("r-future", **unknown), "unknown_business", timestamp=FAR_FUTURE[1]),
        Hostile("rejected, negative", b"\xff\xfe", "invalid_payload", timestamp=NEGATIVE[0]),
        Hostile("rejected, garbage trace", _valid("r-trace", **unknown), "unknown_business", headers=garbage_trace[2]),
        Hostile(
            "rejected, huge traceparent",
            _valid("r-trace2", schema_version=2),
            "unsupported_schema",
            headers=garbage_trace[1],
        ),
        Hostile(
            "rejected, non-utf8 header name",
            _valid("r-raw", **unknown),
            "unknown_business",
            raw_headers=[(b"\xc3\x28", b"\x00\xff")],
            timestamp=YEAR_10000,
        ),
        Hostile(
            "rejected, everything",
            _valid("r-all", tenant_id="tenant-other"),
            "tenant_mismatch",
            key=b"\x00\xff",
            headers=nul_headers + bad_utf8_headers + garbage_trace[3],
            timestamp=2**63 - 1,
        ),
    ]
    # What the contract refuses (closed by whatsapp.contracts.result): dead-lettered as invalid_payload.
    records += [
        Hostile("duplicate key", _with_text("c-dup-1", '"processing_id": "c-dup-1b"'), "invalid_payload"),
        Hostile("duplicate schema_version", _with_text("c-dup-2", '"schema_version": 2'), "invalid_payload"),
        Hostile(
            "duplicate nested key",
            _valid("c-dup-3")[:-1] + b', "customer": {"wa_id": "15550123456", "wa_id": "15550999999"}}',
            "invalid_payload",
        ),
        Hostile(
            "oversized product name",
            _valid("c-big-1", entities={"products": [{"name": "n" * 5_000}]}),
            "invalid_payload",
        ),
        Hostile(
            "oversized sku",
            _valid("c-big-2", entities={"products": [{"sku": "S" * 1_000, "name": "x"}]}),
            "invalid_payload",
        ),
        Hostile("oversized intent", _valid("c-big-3", intent="I" * 1_000), "invalid_payload"),
        Hostile("offset +23:59", _offset_event("c-off-1", "+23:59"), "invalid_payload"),
        Hostile("offset -20:00", _offset_event("c-off-2", "-20:00"), "invalid_payload"),
        Hostile("offset with seconds", _offset_event("c-off-3", "+05:30:15"), "invalid_payload"),
        Hostile("offset +16:00 in an entity", _offset_event("c-off-4", "+16:00", where="entities"), "invalid_payload"),
        Hostile(
            "confidence 1e999",
            _valid("c-inf-1").replace(b'"confidence": 0.95', b'"confidence": 1e999'),
            "invalid_payload",
        ),
        Hostile(
            "entity 1e999",
            _valid("c-inf-2").replace(b'"entities": {', b'"entities": {"score": 1e999, '),
            "invalid_payload",
        ),
        Hostile(
            "entity -1e999",
            _valid("c-inf-3").replace(b'"entities": {', b'"entities": {"score": -1e999, '),
            "invalid_payload",
        ),
        Hostile(
            "processing_ms 1e999",
            _valid("c-inf-4").replace(b'"processing_ms": 140', b'"processing_ms": 1e999'),
            "invalid_payload",
        ),
    ]
    return records


def produce_all(bootstrap: str, topic: str, records: list[Hostile]) -> dict[tuple[int, int], Hostile]:
    """Each hostile record on the broker, by its coordinates. Header names that are not
    UTF-8 go over the wire protocol; the rest through confluent-kafka."""
    plain = [r for r in records if not r.raw_headers]
    placed = dict(
        zip(
            kafka.produce_messages(
                bootstrap, topic, [kafka.Out(r.value, r.key, r.headers, r.timestamp) for r in plain]
            ),
            plain,
            strict=False,
        )
    )
    for r in records:
        if r.raw_headers:
            raw = kafka.RawRecord(r.value, r.key, r.raw_headers, r.timestamp or 1_700_000_000_000)
            placed[(0, kafka.produce_raw(bootstrap, topic, 0, [raw]))] = r
    return placed


def test_no_record_stops_ingest(business, topic, bootstrap, start_ingest, start_worker):
    hostile = hostile_records()
    assert len(hostile) >= 40
    good = [kafka.Out(_valid(f"good-{i:03d}"), f"lead-{i}".encode()) for i in range(100)]
    # Good records before, between and after the hostile ones.
    first = kafka.produce_messages(bootstrap, topic, good[:50])
    placed = produce_all(bootstrap, topic, hostile)
    last = kafka.produce_messages(bootstrap, topic, good[50:])
    good_at = set(first + last)

    worker = start_worker()
    proc = start_ingest(topic, "--idle-exit", "5", "--batch-size", "25")
    assert proc.wait(240) == 0, proc.output()[-4000:]
    output = proc.output()

    # Every record is exactly one inbox row or dead letter.
    found = kafka.outcomes(topic)
    ends = kafka.end_offsets(bootstrap, topic)
    every = {(p, o) for p, end in ends.items() for o in range(end)}
    assert set(found) == every == good_at | set(placed)
    assert {where: len(what) for where, what in found.items() if len(what) != 1} == {}
    became = {where: what[0] for where, what in found.items()}
    assert all(became[where] == INBOX for where in good_at)
    wrong = {
        placed[where].label: (became[where], placed[where].expect)
        for where in placed
        if became[where] != (INBOX if placed[where].expect == INBOX else f"dead letter:{placed[where].expect}")
    }
    assert wrong == {}
    assert kafka.committed_offsets(bootstrap, topic, f"g-{topic}") == ends
    expected_dead = sum(1 for h in hostile if h.expect != INBOX)
    assert f"{len(hostile) - expected_dead + 100} new, 0 re-read, 0 duplicates, {expected_dead} dead-lettered" in output
    assert "partitions paused" not in output

    # The good records and the hostile-metadata ones are processed by the pipeline.
    taken_in = 100 + len(hostile) - expected_dead
    wait_until(
        lambda: ProcessedMessage.objects.filter(status="PROCESSED").count() == taken_in,
        timeout=240,
        message="every taken-in message processed",
    )

    # What could not be converted is kept losslessly.
    rows = {(r.kafka_partition, r.kafka_offset): r for r in ProcessedMessage.objects.filter(kafka_topic=topic)}
    letters = {(d.kafka_partition, d.kafka_offset): d for d in DeadLetter.objects.filter(kafka_topic=topic)}
    for where, record in placed.items():
        kept = rows.get(where) or letters[where]
        ts = record.timestamp
        if ts is not None and datetime_from_millis(ts) is None:
            assert (kept.kafka_timestamp, kept.kafka_timestamp_ms) == (None, ts), record.label
        if isinstance(kept, DeadLetter):
            assert bytes(kept.raw_value) == record.value, record.label
            assert (bytes(kept.kafka_key) if kept.kafka_key is not None else None) == record.key, record.label
            if record.headers is not None:
                assert headers_from_json(kept.kafka_headers) == record.headers, record.label
                assert "\\u0000" not in json.dumps(kept.kafka_headers)
            if record.raw_headers:
                # Every value kept; a name that is not UTF-8 kept byte for byte where the Kafka client
                # lets it be recovered, else marked unreadable.
                assert [
                    (name if got is None else got.encode("utf-8", "surrogateescape"), value)
                    for (got, value), (name, _) in zip(
                        headers_from_json(kept.kafka_headers), record.raw_headers, strict=False
                    )
                ] == record.raw_headers, record.label
    nul = letters[next(w for w, h in placed.items() if h.label == "rejected, nul header")]
    assert nul.kafka_headers == [{"key": "x-note", "value_b64": "YmVmb3JlAGFmdGVy"}, {"key": "x-empty", "value": None}]
    # A valid upstream trace is continued even when its baggage is garbage, by the workers too.
    traced = rows[next(w for w, h in placed.items() if h.label == "garbage trace 2")]
    assert traced.trace_id == UPSTREAM_TRACE
    about = [line for line in json_lines(worker.output()) if line.get("processing_id") == traced.processing_id]
    assert about and {line.get("trace_id") for line in about} == {UPSTREAM_TRACE}


# --- a record that fails inside intake, past the contract ------------------------------------
def test_a_record_failing_inside_intake_is_isolated_and_its_batch_committed(
    business, bootstrap, start_ingest, poison_trigger, redis_client
):
    topic = kafka.create_topic(bootstrap, partitions=1)
    values = [_valid(f"batch-{i:02d}") for i in range(60)]
    values[37] = _valid(POISON)
    kafka.produce(bootstrap, topic, [(None, v) for v in values])

    # Batches of up to 100: the poisoned record sits in the middle of its batch.
    proc = start_ingest(topic, "--idle-exit", "5", "--batch-size", "100")
    assert proc.wait(180) == 0, proc.output()[-4000:]
    output = proc.output()

    assert set(ProcessedMessage.objects.values_list("processing_id", flat=True)) == {
        f"batch-{i:02d}" for i in range(60) if i != 37
    }
    entry = DeadLetter.objects.get()
    assert (entry.stage, entry.reason, entry.processing_id) == ("ingest", "unprocessable", POISON)
    assert (entry.kafka_partition, entry.kafka_offset, bytes(entry.raw_value)) == (0, 37, values[37])
    assert entry.error_class == "ProgrammingError"  # psycopg's class for an error raised by PL/pgSQL
    assert "test trigger" not in entry.error_message + entry.traceback  # the error's text may quote the record
    assert kafka.committed_offsets(bootstrap, topic, f"g-{topic}") == {0: 60}
    assert "59 new, 0 re-read, 0 duplicates, 1 dead-lettered (unprocessable=1)" in output
    assert "partitions paused" not in output
    errors = [json.loads(line) for line in output.splitlines() if line.startswith("{") and '"ERROR"' in line]
    assert [e["message"] for e in errors] == [
        (
            f"ingest: record {topic}[0]@37 could not be stored (ProgrammingError); dead-lettered as unprocessable, "
            "the rest of its batch goes on"
        )
    ]
    assert sum(redis_client.llen(key) for key in redis_client.keys("pipeline*")) == 59

    # Once what broke it is mended, the dead letter is requeued like any other.
    with pytest.raises(RequeueRefused, match=re.escape("still cannot be taken in (ProgrammingError)")):
        requeue(entry.pk, by="test")
    remove_poison_trigger()
    requeue(entry.pk, by="test")
    assert ProcessedMessage.objects.get(processing_id=POISON).kafka_offset == 37
    assert sum(redis_client.llen(key) for key in redis_client.keys("pipeline*")) == 60


# --- reading metadata never raises -------------------------------------------------------------
