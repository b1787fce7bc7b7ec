"""Measuring a classifier on a labelled set: per-intent precision, recall and F1, entity
accuracy and confidence calibration, on the held-out split and the rest.

Every fifth line (5, 10, ...) is held out. A line may also name the set it belongs to ("set"), and
each set gets figures of its own: the shipped file's "blind" set was written after the rules were
frozen and never used to change them, so its figures are what to expect of new messages.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from classifier.backends.base import Catalog, Classification, Classifier
from whatsapp.contracts.request import AIRequestEvent, validate_request
from whatsapp.contracts.result import Intent

LABELLED_SET = Path(__file__).resolve().parent / "data" / "labelled.jsonl"
HOLD_OUT_EVERY = 5
INTENT_NAMES = [intent.value for intent in Intent]
BUCKETS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0001)


class LabelledSetError(ValueError):
    """A line of the labelled set that cannot be used, with its line number."""


@dataclass(frozen=True)
class Example:
    line: int
    text: str
    language: str
    intent: str
    entities: dict[str, Any]
    received_at: datetime
    set: str = ""

    @property
    def held_out(self) -> bool:
        return self.line % HOLD_OUT_EVERY == 0


def load(path: Path) -> list[Example]:
    examples = []
    with path.open(encoding="utf-8") as lines:
        for number, raw in enumerate(lines, 1):
            if raw.strip():
                examples.append(_example(number, raw))
    if not examples:
        raise LabelledSetError(f"{path}: no examples")
    return examples


def _example(number: int, raw: str) -> Example:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise LabelledSetError(f"line {number}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise LabelledSetError(f"line {number}: must be an object with a text string")
    if data.get("intent") not in INTENT_NAMES:
        raise LabelledSetError(f"line {number}: intent must be one of {', '.join(INTENT_NAMES)}")
    entities = data.get("entities") or {}
    if not isinstance(entities, dict):
        raise LabelledSetError(f"line {number}: entities must be an object")
    received = data.get("received_at")
    try:
        received_at = datetime.fromisoformat(received) if received else datetime.now(UTC)
    except (TypeError, ValueError):
        raise LabelledSetError(f"line {number}: received_at must be an ISO-8601 datetime") from None
    if received_at.tzinfo is None:
        raise LabelledSetError(f"line {number}: received_at must have an offset")
    return Example(
        number,
        data["text"],
        str(data.get("language", "")),
        data["intent"],
        entities,
        received_at,
        str(data.get("set", "")),
    )


@dataclass
class Outcome:
    example: Example
    predicted: Classification


@dataclass
class Report:
    """The figures of one split."""

    name: str
    count: int
    accuracy: float
    per_intent: dict[str, dict[str, float]]
    macro: dict[str, float]
    micro: dict[str, float]
    entities: dict[str, dict[str, float]]
    calibration: list[dict[str, float]]
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "split": self.name,
            "count": self.count,
            "accuracy": self.accuracy,
            "per_intent": self.per_intent,
            "macro": self.macro,
            "micro": self.micro,
            "entities": self.entities,
            "calibration": self.calibration,
        }


def run(examples: Iterable[Example], classifier: Classifier, catalog: Catalog) -> list[Outcome]:
    """Each example through the backend's own entry point, as a request event like the relay's."""
    return [Outcome(example, classifier.classify(_request(example, catalog), catalog)) for example in examples]


def _request(example: Example, catalog: Catalog) -> AIRequestEvent:
    return validate_request(
        {
            "schema_version": 1,
            "processing_id": f"eval-{example.line}",
            "business_id": catalog.business_id,
            "tenant_id": "evaluation",
            "lead_id": "eval",
            "customer": {"wa_id": "15550000000"},
            "message": {
                "id": f"eval-{example.line}",
                "type": "text",
                "text": example.text,
                "received_at": example.received_at.isoformat(),
            },
        }
    )


def report(name: str, outcomes: list[Outcome]) -> Report:
    per_intent: dict[str, dict[str, float]] = {}
    for intent in INTENT_NAMES:
        tp = sum(1 for o in outcomes if o.predicted.intent == intent and o.example.intent == intent)
        fp = sum(1 for o in outcomes if o.predicted.intent == intent and o.example.intent != intent)
        fn = sum(1 for o in outcomes if o.predicted.intent != intent and o.example.intent == intent)
        per_intent[intent] = {**_prf(tp, fp, fn), "support": float(tp + fn)}
    macro = {
        k: round(sum(v[k] for v in per_intent.values()) / len(per_intent), 3) for k in ("precision", "recall", "f1")
    }
    correct = sum(1 for o in outcomes if o.predicted.intent == o.example.intent)
    # Single-label: every miss is one false positive and one false negative, so micro P = R = F1 = accuracy.
    micro = _prf(correct, len(outcomes) - correct, len(outcomes) - correct)
    errors = [
        {"line": o.example.line, "expected": o.example.intent, "predicted": o.predicted.intent}
        for o in outcomes
        if o.predicted.intent != o.example.intent
    ]
    return Report(
        name=name,
        count=len(outcomes),
        accuracy=round(correct / len(outcomes), 3) if outcomes else 0.0,
        per_intent=per_intent,
        macro=macro,
        micro=micro,
        entities=_entities(outcomes),
        calibration=_calibration(outcomes),
        errors=errors,
    )


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 3), "recall": round(recall, 3), "f1": round(f1, 3)}


def _rate(hits: int, total: int) -> dict[str, float]:
    return {"accuracy": round(hits / total, 3) if total else 0.0, "n": float(total)}


def _entities(outcomes: list[Outcome]) -> dict[str, dict[str, float]]:
    """Each entity's accuracy over the lines where it is expected or was produced.

    products: the same set of SKUs (either side non-empty); quantities: of the expected products
    with a count that were found, the share with the same count; the others compare values.
    """
    products = [o for o in outcomes if o.example.entities.get("products") or o.predicted.entities.get("products")]
    product_hits = sum(1 for o in products if _skus(o.example.entities) == _skus(o.predicted.entities))
    quantity_total = quantity_hits = 0
    for o in outcomes:
        got = {p["sku"]: p.get("quantity") for p in o.predicted.entities.get("products", [])}
        for expected in o.example.entities.get("products", []):
            if expected.get("quantity") is not None and expected["sku"] in got:
                quantity_total += 1
                quantity_hits += got[expected["sku"]] == expected["quantity"]
    result = {
        "products": _rate(product_hits, len(products)),
        "quantities": _rate(quantity_hits, quantity_total),
        "language": _rate(sum(1 for o in outcomes if o.predicted.language == o.example.language), len(outcomes)),
    }
    for key in ("severity", "preferred_time", "order_reference"):
        wanted = [o for o in outcomes if o.example.entities.get(key) is not None]
        hits = sum(1 for o in wanted if _same(key, o.example.entities[key], o.predicted.entities.get(key)))
        result[key] = _rate(hits, len(wanted))
    return result


def _skus(entities: dict[str, Any]) -> set[str]:
    return {p.get("sku") for p in entities.get("products", [])}


def _same(key: str, expected: Any, got: Any) -> bool:
    if got is None:
        return False
    if key == "preferred_time":
        return bool(datetime.fromisoformat(expected) == datetime.fromisoformat(got))
    return bool(expected == got)


def _calibration(outcomes: list[Outcome]) -> list[dict[str, float]]:
    rows = []
    for low, high in itertools.pairwise(BUCKETS):
        inside = [o for o in outcomes if low <= o.predicted.confidence < high]
        if not inside:
            continue
        rows.append(
            {
                "from": low,
                "to": min(high, 1.0),
                "n": float(len(inside)),
                "mean_confidence": round(sum(o.predicted.confidence for o in inside) / len(inside), 3),
                "accuracy": round(sum(o.predicted.intent == o.example.intent for o in inside) / len(inside), 3),
            }
        )
    return rows


def splits(outcomes: list[Outcome]) -> list[Report]:
    reports = [
        report("held-out (every 5th line)", [o for o in outcomes if o.example.held_out]),
        report("training (the other lines)", [o for o in outcomes if not o.example.held_out]),
        report("all", outcomes),
    ]
    names = sorted({o.example.set for o in outcomes if o.example.set})
    reports += [report(f"set {name}", [o for o in outcomes if o.example.set == name]) for name in names]
    return reports


def render(reports: list[Report], model: str, source: str) -> str:
    lines = [f"model {model} on {source}"]
    for r in reports:
        lines.append("")
        lines.append(f"== {r.name}: {r.count} messages, intent accuracy {r.accuracy:.3f}")
        lines.append(f"{'intent':22} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}")
        for intent, row in r.per_intent.items():
            lines.append(
                f"{intent:22} {row['precision']:>9.3f} {row['recall']:>7.3f} {row['f1']:>6.3f} {int(row['support']):>8}"
            )
        for label, row in (("macro avg", r.macro), ("micro avg", r.micro)):
            lines.append(f"{label:22} {row['precision']:>9.3f} {row['recall']:>7.3f} {row['f1']:>6.3f} {r.count:>8}")
        lines.append("entities (accuracy, n):")
        for key, row in r.entities.items():
            shown = f"{row['accuracy']:.3f}" if row["n"] else "-"  # nothing to measure in this split
            lines.append(f"  {key:16} {shown:>5}  n={int(row['n'])}")
        lines.append("confidence calibration (bucket: n, mean confidence, accuracy):")
        lines.extend(
            f"  [{row['from']:.1f}, {row['to']:.1f}) n={int(row['n']):<4} "
            f"confidence {row['mean_confidence']:.3f}  accuracy {row['accuracy']:.3f}"
            for row in r.calibration
        )
    return "\n".join(lines)
