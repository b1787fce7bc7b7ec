"""The field types both event contracts share (results and requests), and the customer.

Strict: wrong types are refused rather than coerced; unknown keys are ignored, so a producer
can add a field before its consumers know it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

# PostgreSQL's timestamptz input takes offsets up to 15:59:59 either way (checked against the
# server); pydantic writes offsets as hours and minutes only, so seconds would be lost when the
# payload is stored. ISO 8601 and RFC 3339 offsets are whole minutes anyway.
_MAX_UTC_OFFSET = timedelta(hours=15, minutes=59)

ID_PATTERN = r"^[A-Za-z0-9._:-]+$"
WA_ID_PATTERN = r"^[0-9]{7,15}$"
# Meta's business-scoped user id: the country, a dot, letters and digits (at most 128); a
# parent BSUID has a second part (US.ENT.…). The same rule as leads.models.BSUID_PATTERN.
USER_ID_PATTERN = r"^[A-Z]{2}\.[A-Za-z0-9]{1,128}(\.[A-Za-z0-9]{1,128})?$"
LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"

# Pattern errors get a human rule instead of the raw regex.
PATTERN_RULES = {
    ID_PATTERN: "must contain only A-Z a-z 0-9 . _ : -",
    WA_ID_PATTERN: "must be 7-15 digits",
    LANGUAGE_PATTERN: "must be a BCP-47 language tag such as en or pt-BR",
    USER_ID_PATTERN: "must be a business-scoped user id such as US.13491208655302741918",
}


def _iso_datetime(value: Any) -> Any:
    """Parse ISO-8601 strings ourselves so strict mode can still refuse numbers and other types."""
    if not isinstance(value, str):
        if isinstance(value, datetime):
            return value
        raise PydanticCustomError("datetime_type", "must be an ISO-8601 datetime string")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError("datetime_parsing", "must be an ISO-8601 datetime") from None


def _storable_moment(value: datetime) -> datetime:
    """Refuse what would validate but then fail when stored in a timestamptz or compared in UTC."""
    offset = value.utcoffset()
    if offset is not None and (abs(offset) > _MAX_UTC_OFFSET or offset % timedelta(minutes=1)):
        raise PydanticCustomError("timezone_offset", "time-zone offset must be whole minutes between -15:59 and +15:59")
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError("datetime_range", "must be within the years 1-9999 in UTC") from None
    return value


IsoDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_datetime), AfterValidator(_storable_moment)]
Identifier = Annotated[str, Field(min_length=1, pattern=ID_PATTERN)]


class Strict(BaseModel):
    # Unknown keys are ignored so producers can add fields before consumers know them.
    model_config = ConfigDict(strict=True, extra="ignore")


class Customer(Strict):
    """The customer as Meta names them: by BSUID (`user_id`) and, unless they adopted a
    username, by number (`wa_id`); at least one of the two."""

    wa_id: Annotated[str, Field(pattern=WA_ID_PATTERN)] | None = None
    user_id: Annotated[str, Field(max_length=140, pattern=USER_ID_PATTERN)] | None = None
    parent_user_id: Annotated[str, Field(max_length=140, pattern=USER_ID_PATTERN)] | None = None
    username: Annotated[str, Field(max_length=64)] | None = None
    name: Annotated[str, Field(max_length=256)] | None = None

    @model_validator(mode="after")
    def _named(self) -> Customer:
        if not self.wa_id and not self.user_id:
            raise PydanticCustomError("customer_unnamed", "wa_id: field required when user_id is absent")
        return self
