"""From a request and a classification to the result event, checked against the result contract
before it leaves: what this process publishes is exactly what ingest accepts."""

from __future__ import annotations

import json
from typing import Any

from classifier.backends.base import Classification
from whatsapp.contracts.request import AIRequestEvent
from whatsapp.contracts.result import SCHEMA_VERSION, AIResultEvent, parse_event


def result_value(
    request: AIRequestEvent, classification: Classification, model: str, processing_ms: int
) -> tuple[bytes, AIResultEvent]:
    """The record value and its parsed event. Raises ContractError if the backend produced
    something the result contract refuses (a bug in the backend, not in the request)."""
    customer: dict[str, Any] = request.customer.model_dump(exclude_none=True)
    text = request.message.text
    if not text and request.message.media is not None and request.message.media.caption:
        text = request.message.media.caption
    payload = {
        "schema_version": SCHEMA_VERSION,
        "processing_id": request.processing_id,
        "lead_id": request.lead_id,
        "business_id": request.business_id,
        "tenant_id": request.tenant_id,
        "message_id": request.message.id,
        "customer": customer,
        "message": {"text": text, "received_at": request.message.received_at.isoformat()},
        "intent": classification.intent,
        "confidence": classification.confidence,
        "entities": classification.contract_entities(),
        "ai": {"model": model, "processing_ms": max(0, processing_ms)},
    }
    value = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return value, parse_event(value)
