"""Building AI-result events and Kafka records the way the upstream service does."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

BUSINESS_ID = "acme-bakery"
TENANT_ID = "tenant-acme"


def now_iso(minutes_ago: float = 1) -> str:
    """A time relative to now: what the pipeline does with a message depends on its age (the
    24-hour customer-service window), so test events never carry a fixed date."""
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


def later_iso(days: float = 3, hour: int = 15) -> str:
    """A moment in the future on a whole hour, for a callback the customer asks for."""
    moment = datetime.now(UTC) + timedelta(days=days)
    return moment.replace(hour=hour, minute=0, second=0, microsecond=0).isoformat()


# The contract's example event. `event()` gives each copy a received_at a minute before now.
EXAMPLE: dict[str, Any] = {
    "schema_version": 1,
    "processing_id": "proc-7f3c2a",
    "lead_id": "lead-123",
    "business_id": BUSINESS_ID,
    "tenant_id": TENANT_ID,
    "message_id": "wamid.HBgLMTU1NTAxMjM0NTY3FQIAEhgg",
    "customer": {"wa_id": "15550123456", "name": "Ana"},
    "message": {"text": "Hi, I'd like 2 sourdough loaves for Friday", "received_at": "2026-11-24T10:30:00+00:00"},
    "intent": "ORDER_REQUEST",
    "confidence": 0.95,
    "entities": {"products": [{"sku": "SD-01", "name": "sourdough loaf", "quantity": 2}]},
    "ai": {"model": "intent-v3", "processing_ms": 140},
}


def event(processing_id: str, **overrides: Any) -> dict[str, Any]:
    body = copy.deepcopy(EXAMPLE)
    body["processing_id"] = processing_id
    body["message"]["received_at"] = now_iso()
    for key, value in overrides.items():
        body[key] = value
    return body


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode("utf-8")


def invalid_values() -> dict[str, bytes]:
    """One raw value per way the contract can reject a record, keyed by a label."""
    missing = event("bad-missing")
    del missing["customer"]
    wrong_type = event("bad-type", confidence="high")
    return {
        "not_json": b"this is not json {",
        "bad_utf8": b'{"schema_version": 1, "text": "\xff\xfe\xfa"}',
        "missing_field": encode(missing),
        "wrong_type": encode(wrong_type),
        "confidence_1_5": encode(event("bad-conf", confidence=1.5)),
        "too_large": encode(
            event(
                "bad-big",
                message={"text": "x" * 10, "received_at": now_iso()},
                entities={"padding": "p" * (300 * 1024)},
            )
        ),
        "unknown_business": encode(event("bad-biz", business_id="no-such-business")),
        "tenant_mismatch": encode(event("bad-tenant", tenant_id="tenant-other")),
        "schema_v2": encode(event("bad-schema", schema_version=2)),
    }


EXPECTED_REASON = {
    "not_json": "invalid_payload",
    "bad_utf8": "invalid_payload",
    "missing_field": "invalid_payload",
    "wrong_type": "invalid_payload",
    "confidence_1_5": "invalid_payload",
    "too_large": "invalid_payload",
    "unknown_business": "unknown_business",
    "tenant_mismatch": "tenant_mismatch",
    "schema_v2": "unsupported_schema",
}
