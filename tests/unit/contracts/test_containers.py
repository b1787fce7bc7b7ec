"""A record of tens of thousands of empty objects is refused before it is parsed, with the
rule named; a real event whose customer typed brackets is read as usual."""

from __future__ import annotations

import json

import pytest

from tests.support.events import encode, event
from whatsapp.contracts.json_input import MAX_CONTAINERS, MAX_VALUE_BYTES
from whatsapp.contracts.result import ContractError, parse_event


def test_a_record_of_87000_empty_objects_is_refused_before_parsing():
    hostile = event("hostile-1")
    hostile["entities"] = {"x": [{}] * 1}
    body = json.dumps(hostile).encode()
    filler = b"{}," * ((MAX_VALUE_BYTES - len(body) - 64) // 3)
    value = body.replace(b"[{}]", b"[" + filler + b"{}]")
    assert len(value) <= MAX_VALUE_BYTES and value.count(b"{}") > 80_000
    with pytest.raises(ContractError) as refused:
        parse_event(value)
    assert refused.value.reason == "invalid_payload"
    assert f"JSON objects and arrays exceed the limit of {MAX_CONTAINERS}" in str(refused.value)


def test_a_real_event_whose_text_is_full_of_brackets_is_read():
    typed = event("brackets-1", message={"text": "{[" * 2048, "received_at": "2026-01-01T00:00:00+00:00"})
    parsed = parse_event(encode(typed))
    assert parsed.message.text == "{[" * 2048
