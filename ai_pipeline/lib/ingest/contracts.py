"""Data contracts: Pydantic v2 models are the single source of truth.

Raw values arrive as strings (or null). Each field declares how a string becomes a typed value
(a parser from `PARSERS`) and the constraints the value must meet (pydantic's own `StringConstraints`,
`Field(ge=..., le=...)`, `Literal`). `ai_pipeline.lib.ingest.validation` compiles these same declarations into
Polars expressions, and a property test proves both paths decide identically on every row.

Conventions shared by both paths:
- An empty string is a missing value (CSV has no other way to say null); `prepare_raw` applies it.
- Patterns use explicit ASCII classes, anchored with ^...$, so that pydantic's and Polars' regex engines
  (both Rust `regex`) agree.
- Timestamps are ISO 8601; without an offset they are UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$"
# The catalogue's top-level categories: the sample draws from them and the category features pivot on them.
# Events may carry other categories (they still count as distinct categories).
CATEGORIES = ("electronics", "books", "clothing", "home", "sports", "toys", "beauty", "grocery")
CATEGORY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 &/_.\-]*$"
EMAIL_PATTERN = r"^[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}$"

DECIMAL_PATTERN = r"^-?[0-9]{1,15}(\.[0-9]{1,9})?$"
# A measurement rather than money: any number of decimal places (label averages such as 0.6666666666666666).
NUMBER_PATTERN = r"^-?[0-9]{1,15}(\.[0-9]{1,40})?$"
INTEGER_PATTERN = r"^-?[0-9]{1,15}$"
TIMESTAMP_PATTERN = (
    r"^(?P<date>[12][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01]))[T ]"
    r"(?P<hour>[01][0-9]|2[0-3]):(?P<minute>[0-5][0-9]):(?P<second>[0-5][0-9])"
    r"(\.(?P<fraction>[0-9]{1,6}))?"
    r"(?P<offset>Z|(?P<sign>[+-])(?P<off_hour>[01][0-9]|2[0-3]):(?P<off_minute>[0-5][0-9]))?$"
)

# Timestamps outside this range are absurd whatever the partition (year 1900, far future).
EARLIEST_PLAUSIBLE = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_PLAUSIBLE = datetime(2100, 1, 1, tzinfo=UTC)

EVENT_TYPES = ("click", "purchase", "signup", "logout", "view", "cancellation")

_DECIMAL_RE = re.compile(DECIMAL_PATTERN)
_NUMBER_RE = re.compile(NUMBER_PATTERN)
_INTEGER_RE = re.compile(INTEGER_PATTERN)
_TIMESTAMP_RE = re.compile(TIMESTAMP_PATTERN)
BOOLEAN_PATTERN = r"^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[01])$"
_BOOLEAN_RE = re.compile(BOOLEAN_PATTERN)


def parse_decimal(value: Any) -> float | None:
    """A plain decimal string (no exponent, no inf/nan) to a float."""
    if value is None or isinstance(value, float):
        return value
    if not isinstance(value, str) or not _DECIMAL_RE.fullmatch(value):
        raise ValueError("not a plain decimal number")
    return float(value)


def parse_number(value: Any) -> float | None:
    """A plain decimal string with any number of places (no exponent, no inf/nan) to a float."""
    if value is None or isinstance(value, float):
        return value
    if not isinstance(value, str) or not _NUMBER_RE.fullmatch(value):
        raise ValueError("not a plain number")
    return float(value)


def parse_integer(value: Any) -> int | None:
    if value is None or isinstance(value, int):
        return value
    if not isinstance(value, str) or not _INTEGER_RE.fullmatch(value):
        raise ValueError("not an integer")
    return int(value)


def parse_timestamp(value: Any) -> datetime | None:
    """ISO 8601 with optional fraction and offset; naive means UTC. Returns an aware UTC datetime."""
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _TIMESTAMP_RE.fullmatch(value):
        raise ValueError("not an ISO 8601 timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError("not a calendar date") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_boolean(value: Any) -> bool | None:
    """`true`/`false` in any case, or `1`/`0` (JSON booleans arrive as `true`/`false`)."""
    if value is None or isinstance(value, bool):
        return value
    if not isinstance(value, str) or not _BOOLEAN_RE.fullmatch(value):
        raise ValueError("not a boolean")
    return value.lower() in ("true", "1")


def must_be_false(value: bool | None) -> bool | None:
    """A flag that disqualifies the row when set (a deleted message, say)."""
    if value:
        raise ValueError("is true")
    return value


def plausible_time(value: datetime | None) -> datetime | None:
    if value is not None and not (EARLIEST_PLAUSIBLE <= value < LATEST_PLAUSIBLE):
        raise ValueError(f"outside the plausible range [{EARLIEST_PLAUSIBLE:%Y-%m-%d}, {LATEST_PLAUSIBLE:%Y-%m-%d})")
    return value


def within_partition(value: datetime | None, info: ValidationInfo) -> datetime | None:
    """The partition day being validated, passed as context={"partition_day": date}."""
    day: date | None = (info.context or {}).get("partition_day")
    if value is not None and day is not None:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if not (start <= value < start + timedelta(days=1)):
            raise ValueError(f"outside the partition day {day.isoformat()}")
    return value


# Why a row is validated in its arrival day rather than its own (`lib.routing`): rule -> message, where `{arrival}`
# is the day the row arrived on. The partition rule gives way to these on routed rows.
ROUTING_RULES = {
    "too_late": "too late: arrived on {arrival}, more than the source's lateness after its own day",
    "before_start": "its day is before the first partition (AI_PIPELINE_START_DATE): no partition holds it",
    "future": "dated after the moment it was read (arrived on {arrival})",
}


Identifier = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=ID_PATTERN)]
Label = Annotated[str, StringConstraints(max_length=64, pattern=CATEGORY_PATTERN)]
EventTime = Annotated[
    datetime,
    BeforeValidator(parse_timestamp),
    AfterValidator(plausible_time),
    AfterValidator(within_partition),
]


class Event(BaseModel):
    """One user event, whatever source it came from."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: Identifier = Field(validation_alias=AliasChoices("event_id", "eventId", "id"))
    user_id: Identifier = Field(validation_alias=AliasChoices("user_id", "userId", "customer_id"))
    event_type: Literal[EVENT_TYPES] = Field(validation_alias=AliasChoices("event_type", "eventType", "type"))
    event_time: EventTime = Field(
        validation_alias=AliasChoices("event_time", "eventTime", "timestamp", "event_timestamp")
    )
    amount: Annotated[float, BeforeValidator(parse_decimal), Field(ge=0, le=1_000_000)] | None = None
    category: Label | None = None
    country: Label | None = None


class User(BaseModel):
    """One user profile record."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    user_id: Identifier = Field(validation_alias=AliasChoices("user_id", "userId", "customer_id"))
    age: Annotated[int, BeforeValidator(parse_integer), Field(ge=0, le=150)] | None = None
    email: Annotated[str, StringConstraints(max_length=254, pattern=EMAIL_PATTERN)]
    signup_time: Annotated[datetime, BeforeValidator(parse_timestamp), AfterValidator(plausible_time)] = Field(
        validation_alias=AliasChoices("signup_time", "signupTime", "created_at")
    )
    country: Label | None = None


def field_aliases(model: type[BaseModel]) -> dict[str, str]:
    """Every accepted column name (canonical or alias) -> canonical field name."""
    names: dict[str, str] = {}
    for name, info in model.model_fields.items():
        names[name] = name
        if isinstance(info.validation_alias, AliasChoices):
            for choice in info.validation_alias.choices:
                names[str(choice)] = name
    return names


def required_fields(model: type[BaseModel]) -> list[str]:
    return [name for name, info in model.model_fields.items() if info.is_required()]
