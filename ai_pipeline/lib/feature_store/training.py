"""Point-in-time training sets from the offline store (the `user_window_features` table in DuckDB).

For each entity row (user_id, event_timestamp[, label, ...]) the features are those of the latest feature
date strictly before the timestamp's UTC day: features of day D are as of the end of D, so they are known at
any time on D+1 and later. A row older than `ttl` (timestamp minus the end of its feature date) is stale and
gives nulls, as does a user without features. The input's order and columns are kept, and the features follow
them, with `feature_date` telling which day each row came from.

Feature dates are whole days, so with a TTL of at most one day only the previous day's features can be fresh
(the day before that ended at least a day before the timestamp): the match is then an equi-join on
(user, day - 1). A longer TTL takes DuckDB's ASOF JOIN to find each row's latest earlier date. Either way one
DuckDB query fetches the features with a hash join and returns them sorted back into the input's order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl

from ai_pipeline.lib.feature_store.features import FEATURE_DATE, USER
from ai_pipeline.lib.ingest.contracts import parse_timestamp

TIMESTAMP = "event_timestamp"
DEFAULT_TTL = timedelta(days=1)  # a user missing from day D's features was inactive for the whole horizon
OFFLINE_TABLE = "main.user_window_features"


class EntityError(ValueError):
    pass


def _timestamp(value: str | None) -> datetime | None:
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


def read_entities(path: Path) -> pl.DataFrame:
    """An entity file (CSV or Parquet) with user_id and event_timestamp (ISO 8601; naive means UTC)."""
    if path.suffix == ".parquet":
        frame = pl.read_parquet(path)
    elif path.suffix == ".csv":
        frame = pl.read_csv(path, schema_overrides={USER: pl.String, TIMESTAMP: pl.String})
    else:
        raise EntityError(f"{path}: unsupported entity file (use .csv or .parquet)")
    missing = {USER, TIMESTAMP} - set(frame.columns)
    if missing:
        raise EntityError(f"{path}: missing column(s) {sorted(missing)}; found {frame.columns}")
    if frame.schema[TIMESTAMP] == pl.String:
        # Value by value, as the contracts parse ISO 8601: one file may mix "Z", offsets, naive values, "T" and " "
        # (Polars' parser takes one format, inferred from the first value, and fails the others).
        parsed = pl.Series(TIMESTAMP, [_timestamp(v) for v in frame[TIMESTAMP]], dtype=pl.Datetime("us", "UTC"))
        bad = frame.with_row_index("row").filter(parsed.is_null() & frame[TIMESTAMP].is_not_null())
        if bad.height:
            row = bad.row(0, named=True)
            raise EntityError(
                f"{path}: row {row['row'] + 1}, field {TIMESTAMP}: {row[TIMESTAMP]!r} is not an ISO 8601 timestamp"
            )
        frame = frame.with_columns(parsed.alias(TIMESTAMP))
    return frame


@contextmanager
def _forced_asof_join(connection: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """DuckDB estimates an Arrow scan at a handful of rows and would then plan a nested loop (quadratic) instead
    of its ASOF operator; a threshold of 0 forces the ASOF join, for one query."""
    threshold = connection.execute("select current_setting('asof_loop_join_threshold')").fetchone()[0]
    connection.execute("set asof_loop_join_threshold = 0")
    try:
        yield
    finally:
        connection.execute(f"set asof_loop_join_threshold = {int(threshold)}")


def training_set(
    connection: duckdb.DuckDBPyConnection,
    entities: pl.DataFrame,
    *,
    ttl: timedelta = DEFAULT_TTL,
    table: str = OFFLINE_TABLE,
) -> pl.DataFrame:
    """`entities` with the features as of each row's timestamp (see the module's docstring)."""
    missing = {USER, TIMESTAMP} - set(entities.columns)
    if missing:
        raise EntityError(f"entity frame lacks {sorted(missing)}; it has {entities.columns}")
    stamp = entities.schema[TIMESTAMP]
    if not isinstance(stamp, pl.Datetime):
        raise EntityError(f"{TIMESTAMP} must be a datetime column, not {stamp}")
    if stamp.time_zone is None:
        entities = entities.with_columns(pl.col(TIMESTAMP).dt.replace_time_zone("UTC"))
    features = [
        name
        for name, _ in connection.execute(f"select column_name, column_type from (describe {table})").fetchall()
        if name not in (USER, FEATURE_DATE)
    ]
    clash = set(features) & set(entities.columns)
    if clash:
        raise EntityError(f"entity columns {sorted(clash)} clash with feature names")
    row = pl.int_range(pl.len(), dtype=pl.UInt32).alias("__row")
    at = pl.col(TIMESTAMP).dt.convert_time_zone("UTC").dt.replace_time_zone(None)  # UTC wall time
    day = at.dt.date()
    if ttl <= timedelta(days=1):
        # The previous day's features ended at midnight: fresh while the time of day is under the TTL.
        previous_day = pl.when(at - at.dt.truncate("1d") < ttl).then(day - pl.duration(days=1))
        keys = [row, pl.col(USER).cast(pl.String), previous_day.alias("__date")]
        wanted, planning = "entity_rows", nullcontext()
    else:
        keys = [row, pl.col(USER).cast(pl.String), day.alias("__day"), (at - ttl).alias("__oldest")]
        # The ASOF join matches keys only: sorting the feature columns too costs more than the hash join after it.
        wanted = f"""(
            select
                e.__row,
                e.{USER},
                case when k.{FEATURE_DATE} + interval 1 day > e.__oldest then k.{FEATURE_DATE} end as __date
            from entity_rows e
            asof left join (select {USER}, {FEATURE_DATE} from {table}) k
              on e.{USER} = k.{USER} and e.__day > k.{FEATURE_DATE}
        )"""
        planning = _forced_asof_join(connection)
    # Arrow string views, Polars' own layout: DuckDB reads the user ids without a conversion to Arrow's older one.
    entity_rows = entities.select(keys).to_arrow(compat_level=pl.CompatLevel.newest())  # noqa: F841 (read in SQL)
    selected = ", ".join(f'f."{name}"' for name in [FEATURE_DATE, *features])
    # ORDER BY restores the input's order: DuckDB's sort moves whole rows, cheaper than a gather per column.
    with planning:
        found = connection.execute(
            f"""
            select {selected}
            from {wanted} w
            left join {table} f on f.{USER} = w.{USER} and f.{FEATURE_DATE} = w.__date
            order by w.__row
            """
        ).pl()
    if found.height != entities.height:
        raise ValueError(f"{table} has more than one row for some ({USER}, {FEATURE_DATE}); it must be unique")
    utc_columns = [pl.col(c).dt.convert_time_zone("UTC") for c, t in found.schema.items() if isinstance(t, pl.Datetime)]
    return pl.concat([entities, found.with_columns(utc_columns)], how="horizontal")
