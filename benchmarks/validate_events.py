"""Vectorized contract validation vs per-row Pydantic, on the same realistic event rows.

    python benchmarks/validate_events.py [--rows 1000000] [--seed 7] [--pydantic-rows N]

Builds N raw event rows as strings (about 5% dirty, of varied kinds, and about 0.5% duplicate ids), then
times (a) `validation.validate(raw, Event, partition_day=..., unique_key="event_id")` on the raw frame and
(b) `Event.model_validate(row, context=...)` in a Python loop over dicts, collecting the errors. It prints
the rows/s of each, the ratio, and the number of rows where the two paths' decisions differ: the set of
failing fields of each row, from `validate`'s own quarantine reasons (duplicate-id reasons left out: that
rule is outside the model) against pydantic's errors. Per-row Pydantic runs on every row unless
`--pydantic-rows` limits it to a prefix, whose rows/s is then extrapolated (and said so); the mismatch count
always covers every row both paths saw.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, date, datetime

import numpy as np
import polars as pl
from pydantic import ValidationError

from ai_pipeline.lib.ingest import validation
from ai_pipeline.lib.ingest.contracts import EVENT_TYPES, Event
from ai_pipeline.lib.ingest.raw import raw_schema

PARTITION_DAY = date(2024, 2, 29)
CATEGORIES = ["Electronics", "Books", "Home & Garden", "Toys/Games", "Sports", "Grocery", "Beauty"]
COUNTRIES = ["US", "DE", "FR", "GB", "JP", "BR", "IN", "CA", "ES", "IT"]
# (column, replacement expression) for each kind of dirt; `i` is the row number, `t` a shifted timestamp string.
DIRT: list[tuple[str, pl.Expr]] = [
    ("event_id", pl.lit("")),  # missing id
    ("event_id", pl.format("evt {}", pl.col("i"))),  # space in id
    ("user_id", pl.lit(None, dtype=pl.String)),  # missing user
    ("user_id", pl.format("ü{}", pl.col("i"))),  # non-ASCII id
    ("event_type", pl.col("event_type").str.to_uppercase()),  # case near-miss
    ("event_type", pl.lit("purchased")),  # unknown type
    ("event_time", pl.lit("2024-02-30T10:15:00Z")),  # not a calendar date
    ("event_time", pl.col("t").str.replace("2024-02-29", "2024-02-28")),  # outside the partition day
    ("event_time", pl.format("{} ", pl.col("event_time"))),  # trailing space
    ("event_time", pl.lit("1709200000")),  # epoch seconds
    ("event_time", pl.lit("2024-02-29T25:00:00Z")),  # hour 25
    ("event_time", pl.lit("")),  # missing time
    ("amount", pl.format("-{}", pl.col("amount"))),  # negative
    ("amount", pl.lit("1e3")),  # exponent
    ("amount", pl.lit("NaN")),
    ("amount", pl.lit("2500000.00")),  # over the cap
    ("amount", pl.lit("12,50")),  # decimal comma
    ("country", pl.lit("Österreich")),  # non-ASCII label
    ("country", pl.lit("X" * 70)),  # too long
    ("category", pl.lit("&misc")),  # bad first character
]


def build_rows(n: int, seed: int, day: date = PARTITION_DAY) -> pl.DataFrame:
    """n event rows as strings (as a CSV source would send them), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    start = datetime(day.year, day.month, day.day)
    micros = rng.integers(0, 86_400_000_000, n)
    style = rng.integers(0, 5, n)
    cents = rng.integers(0, 50_000_00, n)
    dirty = rng.random(n) < 0.05
    kind = np.where(dirty, rng.integers(0, len(DIRT), n), -1)
    duplicate_of = np.where(rng.random(n) < 0.005, rng.integers(0, n, n), -1)
    base = pl.DataFrame(
        {
            "i": np.arange(n),
            "micros": micros,
            "style": style,
            "user": rng.integers(1, 250_000, n),
            "type": rng.integers(0, len(EVENT_TYPES), n),
            "cents": cents,
            "has_amount": rng.random(n) < 0.9,
            "cat": rng.integers(-1, len(CATEGORIES), n),
            "ctry": rng.integers(-1, len(COUNTRIES), n),
            "kind": kind,
            "dup": duplicate_of,
        }
    )
    utc = pl.lit(start) + pl.duration(microseconds=pl.col("micros"))
    frame = base.with_columns(
        pl.when(pl.col("dup") >= 0).then(pl.col("dup")).otherwise(pl.col("i")).alias("id_no"),
        pl.format("u_{}", pl.col("user")).alias("user_id"),
        pl.col("type").replace_strict(dict(enumerate(EVENT_TYPES)), return_dtype=pl.String).alias("event_type"),
        # Sources differ in how they write times: Z with or without millis, naive with a space, offsets.
        pl.when(pl.col("style") == 0)
        .then(utc.dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        .when(pl.col("style") == 1)
        .then(utc.dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
        .when(pl.col("style") == 2)
        .then(utc.dt.strftime("%Y-%m-%d %H:%M:%S"))
        .when(pl.col("style") == 3)
        .then((utc + pl.duration(minutes=330)).dt.strftime("%Y-%m-%dT%H:%M:%S%.6f+05:30"))
        .otherwise((utc - pl.duration(hours=8)).dt.strftime("%Y-%m-%dT%H:%M:%S-08:00"))
        .alias("event_time"),
        utc.dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("t"),
        pl.when(pl.col("has_amount"))
        .then(pl.format("{}.{}", pl.col("cents") // 100, (pl.col("cents") % 100).cast(pl.String).str.zfill(2)))
        .otherwise(pl.lit(""))
        .alias("amount"),
        pl.col("cat").replace_strict(dict(enumerate(CATEGORIES)), default="", return_dtype=pl.String).alias("category"),
        pl.col("ctry")
        .replace_strict(dict(enumerate(COUNTRIES)), default=None, return_dtype=pl.String)
        .alias("country"),
    ).with_columns(pl.format("evt-{}", pl.col("id_no")).alias("event_id"))
    for k, (column, dirt) in enumerate(DIRT):
        frame = frame.with_columns(pl.when(pl.col("kind") == k).then(dirt).otherwise(pl.col(column)).alias(column))
    return frame.select(list(Event.model_fields))


def to_raw_frame(rows: pl.DataFrame, day: date) -> pl.DataFrame:
    """The raw layer's shape (`raw.raw_schema`): lineage columns around the contract's string columns."""
    n = rows.height
    schema = raw_schema(Event)
    lineage = pl.DataFrame(
        {
            "partition_date": pl.repeat(day, n, eager=True),
            "_source": pl.repeat("benchmark", n, eager=True),
            "_source_uri": pl.repeat("bench://events.csv", n, eager=True),
            "_source_offset": pl.int_range(0, n, eager=True),
            "_source_page": pl.repeat(None, n, dtype=pl.Int64, eager=True),
            "_ingested_at": pl.repeat(datetime(2024, 3, 1, 1, tzinfo=UTC), n, eager=True),
            "_arrival_date": pl.repeat(day, n, eager=True),
            "_event_date": pl.repeat(day, n, eager=True),
            "_routing": pl.repeat(None, n, dtype=pl.String, eager=True),
            "_raw": rows.select(pl.struct(pl.all()).struct.json_encode()).to_series(),
            "_read_error": pl.repeat(None, n, dtype=pl.String, eager=True),
        }
    )
    return pl.concat([lineage, rows], how="horizontal").select([pl.col(c).cast(t) for c, t in schema.items()])


def pydantic_loop(dicts: list[dict], day: date) -> tuple[list[frozenset[str]], list[list[dict]]]:
    """The seed's way: model_validate row by row, collecting each row's errors."""
    context = {"partition_day": day}
    decisions: list[frozenset[str]] = []
    errors: list[list[dict]] = []
    for row in dicts:
        try:
            Event.model_validate({k: None if v == "" else v for k, v in row.items()}, context=context)
            decisions.append(frozenset())
        except ValidationError as exc:
            errs = exc.errors(include_url=False)
            errors.append(errs)
            decisions.append(frozenset(str(e["loc"][0]) for e in errs))
    return decisions, errors


def vectorized_failing_fields(result: validation.ValidationResult, n: int) -> pl.Series:
    """Per row (by `_source_offset`), the sorted failing fields of `validate`'s row rules, ',' joined."""
    failing = (
        result.quarantined.select("_source_offset", "reasons")
        .explode("reasons")
        .unnest("reasons")
        .filter(pl.col("rule") != "duplicate")
        .group_by("_source_offset")
        .agg(pl.col("field").unique().sort().str.join(","))
    )
    return (
        pl.DataFrame({"_source_offset": pl.int_range(0, n, eager=True)})
        .join(failing, on="_source_offset", how="left")
        .sort("_source_offset")
        .get_column("field")
        .fill_null("")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5, help="vectorized runs; the median is reported")
    parser.add_argument(
        "--pydantic-rows", type=int, default=None, help="time per-row Pydantic on the first N rows only (extrapolated)"
    )
    args = parser.parse_args()
    day = PARTITION_DAY

    t0 = time.perf_counter()
    rows = build_rows(args.rows, args.seed, day)
    raw = to_raw_frame(rows, day)
    print(f"built {raw.height:,} raw rows in {time.perf_counter() - t0:.2f}s (seed {args.seed}, partition {day})")
    print(f"polars {pl.__version__}, {pl.thread_pool_size()} threads")

    # (a) vectorized: the whole validate() call, contract compilation and duplicate resolution included.
    timings, result = [], None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        result = validation.validate(raw, Event, partition_day=day, unique_key="event_id")
        timings.append(time.perf_counter() - t0)
    assert result is not None
    vec_seconds = statistics.median(timings)
    vec_rate = raw.height / vec_seconds
    print(
        f"vectorized validate(): {vec_rate:,.0f} rows/s (median of {args.repeat}: {vec_seconds:.3f}s;"
        f" best {min(timings):.3f}s) -> {result.valid.height:,} valid, {result.quarantined.height:,} quarantined"
        f" ({result.duplicates:,} duplicate ids)"
    )

    # (b) per-row Pydantic on the same rows (all, or a prefix).
    n_py = min(args.pydantic_rows or raw.height, raw.height)
    dicts = rows.head(n_py).to_dicts()
    t0 = time.perf_counter()
    py_decisions, py_errors = pydantic_loop(dicts, day)
    py_seconds = time.perf_counter() - t0
    py_rate = n_py / py_seconds
    note = "" if n_py == raw.height else f" (timed on the first {n_py:,} rows, extrapolated to {raw.height:,})"
    print(
        f"per-row pydantic:      {py_rate:,.0f} rows/s ({py_seconds:.2f}s for {n_py:,} rows;"
        f" ~{raw.height / py_rate:.2f}s for all){note}"
        f" -> {sum(not d for d in py_decisions):,} valid, {len(py_errors):,} with errors"
    )
    print(f"speed ratio: vectorized is {vec_rate / py_rate:.1f}x per-row pydantic")

    # Decisions on every row both paths saw: failing-field sets, duplicate-id handling left out.
    vec = vectorized_failing_fields(result, raw.height).head(n_py)
    ref = pl.Series([",".join(sorted(d)) for d in py_decisions], dtype=pl.String)
    differ = pl.DataFrame({"row": range(n_py), "pydantic": ref, "vectorized": vec}).filter(
        pl.col("pydantic") != pl.col("vectorized")
    )
    print(f"decision mismatches: {differ.height:,} of {n_py:,} rows compared")
    if differ.height:
        print(differ.head(10).join(rows.with_row_index("row").with_columns(pl.col("row").cast(pl.Int64)), on="row"))
    reasons = (
        result.quarantined.select(pl.col("reasons").explode().struct.unnest())
        .group_by("field", "rule")
        .len()
        .sort("len", descending=True)
    )
    print("quarantine reasons: " + ", ".join(f"{f}/{r} {n:,}" for f, r, n in reasons.iter_rows()))
    print(
        f"targets: vectorized >= 1,000,000 rows/s: {'yes' if vec_rate >= 1_000_000 else 'NO'};"
        f" >= 10x per-row pydantic: {'yes' if vec_rate >= 10 * py_rate else 'NO'}"
    )
    sys.exit(1 if differ.height else 0)


if __name__ == "__main__":
    main()
