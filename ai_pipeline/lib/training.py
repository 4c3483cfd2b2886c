"""Point-in-time training sets from the offline store (the `user_window_features` table in DuckDB).

For each entity row (user_id, event_timestamp[, label, ...]) the features are those of the latest feature
date strictly before the timestamp's UTC day: features of day D are as of the end of D, so they are known at
any time on D+1 and later. A row older than `ttl` (timestamp minus the end of its feature date) is stale and
gives nulls, as does a user without features. One DuckDB ASOF JOIN does the matching; the input's order and
columns are kept, and the features follow them, with `feature_date` telling which day each row came from.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl

from ai_pipeline.lib.contracts import parse_timestamp
from ai_pipeline.lib.features import FEATURE_DATE, USER

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
    entity_rows = entities.select(  # noqa: F841  (read by name in the SQL below)
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("__row"),
        pl.col(USER).cast(pl.String),
        pl.col(TIMESTAMP).dt.convert_time_zone("UTC").dt.date().alias("__day"),
        (pl.col(TIMESTAMP).dt.convert_time_zone("UTC").dt.replace_time_zone(None) - ttl).alias("__oldest"),
    ).to_arrow()
    selected = ", ".join(f'f."{name}"' for name in [FEATURE_DATE, *features])
    # DuckDB estimates an Arrow scan at a handful of rows and would then plan a nested loop (quadratic) instead
    # of its ASOF operator; a threshold of 0 forces the ASOF join for the duration of this query. The ASOF join
    # matches keys only (sorting the feature columns too costs more than the join); the (user, date) key of the
    # table then fetches the features of the fresh matches with a hash join.
    threshold = connection.execute("select current_setting('asof_loop_join_threshold')").fetchone()[0]
    connection.execute("set asof_loop_join_threshold = 0")
    try:
        found = connection.execute(
            f"""
            with hit as (
                select e.__row, e.{USER}, k.{FEATURE_DATE}
                from entity_rows e
                asof left join (select {USER}, {FEATURE_DATE} from {table}) k
                  on e.{USER} = k.{USER} and e.__day > k.{FEATURE_DATE}
                where k.{FEATURE_DATE} + interval 1 day > e.__oldest
            )
            select h.__row, {selected}
            from hit h join {table} f on f.{USER} = h.{USER} and f.{FEATURE_DATE} = h.{FEATURE_DATE}
            """
        ).pl()
    finally:
        connection.execute(f"set asof_loop_join_threshold = {int(threshold)}")
    rows = pl.DataFrame({"__row": pl.int_range(entities.height, dtype=pl.UInt32, eager=True)})
    matched = rows.join(found, on="__row", how="left", maintain_order="left").drop("__row")
    utc = [pl.col(c).dt.convert_time_zone("UTC") for c, t in matched.schema.items() if isinstance(t, pl.Datetime)]
    return pl.concat([entities, matched.with_columns(utc)], how="horizontal")
