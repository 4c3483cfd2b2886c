"""Which daily partition each raw row is validated in: its own UTC event day, within a lateness.

Raw tables are partitioned by arrival: the day folder a file was dropped in, the day window a database or API was
read for. Validated tables are partitioned by event day. `route` fills each raw row's `_event_date` (the validated
partition it belongs to) and, when that cannot be its own day, `_routing` (why, a key of
`contracts.ROUTING_RULES`):

- a row whose event time parses and is plausible goes to its own UTC day when that day is at most `lateness_days`
  before the arrival day, not before the first partition, and not after the day the row was read (rows of the
  current day wait in the raw table until the day is a partition); any number of days after the arrival day is
  fine, so a bulk export dropped in the folder of its first day lands every row on its day;
- otherwise it stays on its arrival day with the reason: `too_late`, `before_start` or `future`, and validation
  quarantines it there (the days it would have changed are left alone);
- a row without a readable time (or a contract without an event time, like user profiles) stays on its arrival
  day, where validation quarantines it for its own reasons or publishes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import polars as pl
from pydantic import BaseModel

from ai_pipeline.lib.ingest import contracts
from ai_pipeline.lib.ingest.validation import parsed_field, routing_field

DEFAULT_LATENESS_DAYS = 7


@dataclass(frozen=True)
class Routing:
    lateness_days: int = DEFAULT_LATENESS_DAYS
    first_day: date | None = None  # the first partition; earlier days do not exist


def event_times(raw: pl.DataFrame, model: type[BaseModel]) -> pl.Series | None:
    """Each row's event time as validation parses it, null where it is missing, unreadable or implausible; None for a
    contract without an event time."""
    name = routing_field(model)
    if name is None:
        return None
    when = pl.lit(parsed_field(raw, model, name))
    plausible = (when >= contracts.EARLIEST_PLAUSIBLE) & (when < contracts.LATEST_PLAUSIBLE)
    return pl.select(pl.when(plausible).then(when)).to_series()


def route(raw: pl.DataFrame, model: type[BaseModel], *, ingested_at: datetime, routing: Routing) -> pl.DataFrame:
    """`raw` (one arrival day's rows, `_arrival_date` set) with `_event_date` and `_routing` filled in."""
    when = event_times(raw, model) if raw.height else None
    if when is None:
        return raw
    day = pl.col("__when").dt.date()
    arrival = pl.col("_arrival_date")
    usable = pl.col("_read_error").is_null() & pl.col("__when").is_not_null()
    reason = (
        pl.when(~usable)
        .then(None)
        .when(day < arrival - timedelta(days=routing.lateness_days))
        .then(pl.lit("too_late"))
        .when(day < (routing.first_day or contracts.EARLIEST_PLAUSIBLE.date()))
        .then(pl.lit("before_start"))
        .when(day > ingested_at.date())
        .then(pl.lit("future"))
        .otherwise(None)
    )
    return (
        raw.with_columns(when.alias("__when"))
        .with_columns(reason.alias("_routing"))
        .with_columns(pl.when(usable & pl.col("_routing").is_null()).then(day).otherwise(arrival).alias("_event_date"))
        .drop("__when")
    )


def days_touched(raw: pl.DataFrame) -> dict[date, int]:
    """Rows per validated partition day."""
    return dict(sorted(raw.group_by("_event_date").len().rows())) if raw.height else {}
