"""Why a record was refused, in words safe to log and store: error lines name the field and
the rule, never the input's values (customer data must not leak into logs or the DLQ)."""

from __future__ import annotations

from typing import Any

from pydantic_core import ErrorDetails

from whatsapp.contracts.fields import PATTERN_RULES

INVALID_PAYLOAD = "invalid_payload"
UNSUPPORTED_SCHEMA = "unsupported_schema"

# A bad record can fail in hundreds of places; the first few lines are enough to fix it.
_MAX_ERROR_LINES = 20
_MAX_LINE_CHARS = 300


class ContractError(Exception):
    """Why a record was refused, in a form safe to log and to store with the dead letter."""

    def __init__(self, reason: str, errors: list[str]) -> None:
        self.reason = reason
        self.errors = errors
        super().__init__(str(self))

    def __str__(self) -> str:
        return "; ".join(self.errors)

    def __reduce__(self) -> tuple[Any, ...]:
        # Celery and multiprocessing pickle exceptions; the default would lose reason and errors.
        return (type(self), (self.reason, self.errors))


def format_error(error: ErrorDetails) -> str:
    """Turn a pydantic error into "<dotted.loc>: <rule>" without the offending value."""
    where = ".".join(str(part) for part in error["loc"]) or "value"
    if error["type"] == "customer_unnamed":
        # Raised on the customer object as a whole; said of the field a producer must add.
        return f"{where}.wa_id: field required when {where}.user_id is absent"
    return f"{where}: {_rule(error)}"


def _rule(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return "field required"
    if kind in ("string_type", "string_sub_type"):
        return "must be a string"
    if kind in ("int_type", "int_from_float"):
        return "must be an integer"
    if kind == "float_type":
        return "must be a number"
    if kind == "finite_number":
        return "must be a finite number"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return "must be an object"
    if kind == "list_type":
        return "must be an array"
    if kind == "string_too_short":
        return f"must be at least {ctx.get('min_length')} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items"
    if kind == "string_pattern_mismatch":
        return PATTERN_RULES.get(str(ctx.get("pattern")), "has an invalid format")
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"must be <= {ctx.get('le')}"
    if kind == "timezone_aware":
        return "must include a timezone offset"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    # Custom errors carry our own wording; pydantic's other messages state the rule, not the input.
    return error["msg"]


def invalid(errors: str | list[str]) -> ContractError:
    return ContractError(INVALID_PAYLOAD, capped([errors] if isinstance(errors, str) else list(errors)))


def capped(lines: list[str]) -> list[str]:
    # Unknown keys and numbers appear in lines; cap them so a giant one cannot flood the logs.
    lines = [line if len(line) <= _MAX_LINE_CHARS else line[: _MAX_LINE_CHARS - 3] + "..." for line in lines]
    if len(lines) > _MAX_ERROR_LINES:
        hidden = len(lines) - _MAX_ERROR_LINES
        lines = [*lines[:_MAX_ERROR_LINES], f"value: {hidden} more problems not shown"]
    return lines
