"""Building ai.process.request events the way the outbox relay does, for the classifier's tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.events import BUSINESS_ID, TENANT_ID
from whatsapp.contracts.request import processing_id_for


def request(text: str, *, wamid: str, wa_id: str = "15550123456", **changes: Any) -> dict[str, Any]:
    received_at = changes.pop("received_at", datetime.now(UTC) - timedelta(minutes=1))
    event: dict[str, Any] = {
        "schema_version": 1,
        "processing_id": processing_id_for(wamid),
        "business_id": BUSINESS_ID,
        "tenant_id": TENANT_ID,
        "lead_id": "ld.0123456789abcdef0123",
        "customer": {"wa_id": wa_id, "name": "Ana"},
        "message": {"id": wamid, "type": "text", "text": text, "received_at": received_at.isoformat()},
    }
    event.update(changes)
    return event


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode("utf-8")
