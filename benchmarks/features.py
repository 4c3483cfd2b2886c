"""Window features and point-in-time training sets: ai_pipeline vs the seed's pandas and Polars recipes.

    python benchmarks/features.py [--events 10000000] [--days 120] [--users 100000] [--feature-days 30]
                                  [--pandas-days N] [--entities 1000000] [--ttl-days 1] [--repeat 3]
                                  [--seed 42] [--quick] [--training-only]

Benchmark 1 (features). `sample.clean_events` generates EVENTS events over DAYS days from START; the features
of the last FEATURE_DAYS days (each with a full 90-day history) are computed three ways:
  (a) ai_pipeline, incrementally as the assets run it, per day: `features.daily_aggregates` of the day's
      events, `features.advance_state` (state of D-1 + D's partials) and `features.window_features` on the
      states of D, D-7, D-30 and D-90 (held in memory here; the assets read them from the warehouse).
      Reported: the steady-state cost of the FEATURE_DAYS measured days, the one-off cost of the partials and
      states of the history days before them, and both together (from scratch);
  (b) the seed's pandas recipe: per day and window, filter the events and groupby('user_id').agg(...), then the
      totals and the category pivot_table over every event up to the end of D, merged per user;
  (c) the same recipe in eager Polars (filter + group_by per window, group_by and pivot for the totals, joins).
Semantics, the same three ways: the window of day D holds the events of days (D - w, D], i.e.
`cutoff <= event_time < end of D` with cutoff = end of D - w days (the seed wrote `event_time > cutoff`, which
drops events at exactly 00:00:00 of the window's first day; the generator makes some). Rows: the users with an
event in the 90-day window. The per-user totals (first/last event, active days, events per active day) and the
category pivot (`category_<c>_amount`, `category_<c>_count`) cover every event since the first day of data
(START) up to the end of D. Every feature of every day must agree, (a) vs (b) and (a) vs (c): same users, floats
within 1e-9 relative, integers and timestamps equal, nulls in the same cells. `--pandas-days N` runs pandas on
the first N feature days only and extrapolates its time to all of them (the output says so). Targets: (a) >= 20x
(b) and >= 5x (c), steady state.

Benchmark 2 (training set). The partitions from (a) go into a DuckDB file table `main.user_window_features`;
ENTITIES entity rows (users of the table plus 5% unknown ones, timestamps uniform over the feature days and
the 2 days after the last one, so that the TTL rule has stale rows to drop; a label column) are joined with
`training.training_set` vs `pandas.merge_asof(by='user_id', direction='backward', allow_exact_matches=False)`
on the UTC day, with the same TTL rule, back in input order. Timed: our whole call, which reads the features
from the DuckDB table, and pandas' sorting, merge, TTL masking and reordering of a frame already in memory
(reading the table into pandas is reported apart); median of REPEAT runs, the two paths alternating. Both must
be identical. Target >= 10x. DuckDB's profile of one `training_set` call is printed, operator by operator (with
a TTL of at most a day the match is a hash join on (user, day - 1); beyond, an ASOF JOIN finds the dates).
`--training-only` skips benchmark 1 and reads the offline table that the last full run with the same
--events/--days/--users/--feature-days/--seed saved as Parquet under $AI_PIPELINE_BENCH_CACHE
(~/.cache/ai_pipeline_bench): for iterating on benchmark 2; report the figures of a full run.
The process exits 1 when any result disagrees.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl

from ai_pipeline.lib.feature_store import features
from ai_pipeline.lib.feature_store.training import OFFLINE_TABLE, TIMESTAMP, training_set
from ai_pipeline.lib.ingest.contracts import CATEGORIES
from ai_pipeline.lib.ingest.sample import clean_events

START = date(2024, 1, 1)
WINDOWS = features.WINDOWS
HORIZON = features.HORIZON
SCHEMA = features.feature_schema()
NAMES = [f.name for f in features.FEATURES]
WINDOWED = [f.name for f in features.FEATURES if f.window_days]
REL_TOL = 1e-9
CACHE_DIR = Path(os.environ.get("AI_PIPELINE_BENCH_CACHE", "~/.cache/ai_pipeline_bench")).expanduser()
# DuckDB's .df() triggers pandas 3's deprecation warning internally; not ours to act on.
warnings.filterwarnings("ignore", message="The inplace keyword")


def end_of(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


def pivot_names(kind: str) -> list[str]:
    return [f"category_{c}_{kind}" for c in CATEGORIES]


# --- (b) the seed's pandas recipe -----------------------------------------------------------------------------


def pandas_features(df: pd.DataFrame, day: date) -> pd.DataFrame:
    end = pd.Timestamp(end_of(day))
    upto = df[df.event_time < end]  # every event since the first day of data, up to the end of D
    per_window = []
    for w in WINDOWS:
        window = upto[upto.event_time >= end - pd.Timedelta(days=w)]
        stats = window.groupby("user_id").agg(
            **{
                f"amount_sum_{w}d": ("amount", "sum"),
                f"amount_mean_{w}d": ("amount", "mean"),
                f"event_count_{w}d": ("event_id", "count"),
                f"distinct_categories_{w}d": ("category", "nunique"),
            }
        )
        purchases = window[window.event_type == "purchase"].groupby("user_id").size()
        stats[f"purchase_count_{w}d"] = purchases.reindex(stats.index, fill_value=0)
        per_window.append(stats)

    totals = upto.groupby("user_id").agg(
        first_event_at=("event_time", "min"),
        last_event_at=("event_time", "max"),
        events=("event_id", "count"),
    )
    totals["active_days"] = upto.assign(day=upto.event_time.dt.normalize()).groupby("user_id")["day"].nunique()
    totals["avg_daily_events"] = totals.pop("events") / totals["active_days"]

    amounts = upto.pivot_table(index="user_id", columns="category", values="amount", aggfunc="sum", fill_value=0)
    counts = upto.pivot_table(index="user_id", columns="category", values="event_id", aggfunc="count", fill_value=0)
    amounts = amounts.reindex(columns=list(CATEGORIES), fill_value=0.0)
    counts = counts.reindex(columns=list(CATEGORIES), fill_value=0)
    amounts.columns = pivot_names("amount")
    counts.columns = pivot_names("count")

    # Every user active in the 90 days gets a row; narrower windows without events count 0 (means stay NaN).
    out = per_window[-1].reset_index()
    for stats in per_window[:-1]:
        out = out.merge(stats.reset_index(), on="user_id", how="left")
    for frame in (totals, amounts, counts):
        out = out.merge(frame.reset_index(), on="user_id", how="left")
    zero = [c for c in out.columns if c.startswith(("amount_sum", "event_count", "distinct_categories", "purchase"))]
    pivot = [*pivot_names("amount"), *pivot_names("count")]
    out[zero + pivot] = out[zero + pivot].fillna(0)
    out["feature_date"] = day
    return out[["user_id", "feature_date", *NAMES]].sort_values("user_id").reset_index(drop=True)


# --- (c) the same recipe in Polars ----------------------------------------------------------------------------


def polars_features(events: pl.DataFrame, day: date) -> pl.DataFrame:
    end = end_of(day)
    upto = events.filter(pl.col("event_time") < end)  # every event since the first day of data, up to the end of D
    per_window = []
    for w in WINDOWS:
        window = upto.filter(pl.col("event_time") >= end - timedelta(days=w))
        per_window.append(
            window.group_by("user_id").agg(
                pl.col("amount").sum().alias(f"amount_sum_{w}d"),
                pl.col("amount").mean().alias(f"amount_mean_{w}d"),
                pl.col("event_id").count().alias(f"event_count_{w}d"),
                pl.col("category").drop_nulls().n_unique().alias(f"distinct_categories_{w}d"),
                (pl.col("event_type") == "purchase").sum().alias(f"purchase_count_{w}d"),
            )
        )

    totals = upto.group_by("user_id").agg(
        pl.col("event_time").min().alias("first_event_at"),
        pl.col("event_time").max().alias("last_event_at"),
        pl.col("event_time").dt.date().n_unique().alias("active_days"),
        pl.len().alias("events"),
    )
    totals = totals.with_columns((pl.col("events") / pl.col("active_days")).alias("avg_daily_events")).drop("events")
    amounts = upto.pivot(on="category", index="user_id", values="amount", aggregate_function="sum")
    counts = upto.pivot(on="category", index="user_id", values="event_id", aggregate_function="len")
    amounts = amounts.select(
        "user_id",
        *[
            (pl.col(c) if c in amounts.columns else pl.lit(0.0)).alias(n)
            for c, n in zip(CATEGORIES, pivot_names("amount"), strict=True)
        ],
    )
    counts = counts.select(
        "user_id",
        *[
            (pl.col(c) if c in counts.columns else pl.lit(0)).alias(n)
            for c, n in zip(CATEGORIES, pivot_names("count"), strict=True)
        ],
    )

    out = per_window[-1]
    for frame in [*per_window[:-1], totals, amounts, counts]:
        out = out.join(frame, on="user_id", how="left")
    zero = [c for c in out.columns if c.startswith(("amount_sum", "event_count", "distinct_categories", "purchase"))]
    zero += [*pivot_names("amount"), *pivot_names("count")]
    return (
        out.with_columns(pl.col(zero).fill_null(0), pl.lit(day).alias("feature_date"))
        .select(list(SCHEMA))
        .cast(SCHEMA)
        .sort("user_id")
    )


# --- comparison -----------------------------------------------------------------------------------------------


def compare(ours: pl.DataFrame, theirs: pl.DataFrame, columns: list[str]) -> tuple[int, dict[str, int]]:
    """(cells compared, mismatches per column): rows matched by user, floats within REL_TOL relative."""
    ours, theirs = ours.sort("user_id"), theirs.sort("user_id")
    if ours["user_id"].to_list() != theirs["user_id"].to_list():
        extra = set(theirs["user_id"]) ^ set(ours["user_id"])
        return ours.height * len(columns), {"user_id": max(len(extra), 1)}
    bad: dict[str, int] = {}
    for name in columns:
        a, b = ours[name], theirs[name].cast(ours.schema[name])
        if a.dtype == pl.Float64:
            x, y = a.to_numpy(), b.to_numpy()  # nulls -> NaN
            same = pl.Series(np.isclose(x, y, rtol=REL_TOL, atol=0.0, equal_nan=True))
        else:
            same = a.eq_missing(b)
        wrong = int((~same).sum())
        if wrong:
            bad[name] = wrong
    return ours.height * len(columns), bad


def from_pandas_features(frame: pd.DataFrame) -> pl.DataFrame:
    return pl.from_pandas(frame).with_columns(pl.col("feature_date").cast(pl.Date)).select(list(SCHEMA)).cast(SCHEMA)


# --- benchmark 1 ----------------------------------------------------------------------------------------------


def timed(function: Callable, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def keep_needed(states: dict[date, pl.DataFrame], targets: list[date]) -> None:
    """Drops the states no remaining feature day reads (untimed: the assets keep them in the warehouse)."""
    wanted = {d for t in targets for d in features.state_days(t)}
    for day in [d for d in states if d not in wanted]:
        del states[day]


def bench_features(args: argparse.Namespace) -> tuple[list[pl.DataFrame], bool]:
    end = START + timedelta(days=args.days - 1)
    target_days = [end - timedelta(days=n) for n in range(args.feature_days - 1, -1, -1)]
    history_days = [START + timedelta(days=n) for n in range((target_days[0] - START).days)]
    if len(history_days) < HORIZON:
        sys.exit(f"--days {args.days} leaves {len(history_days)} history days; need >= {HORIZON}")

    started = time.perf_counter()
    events = clean_events(START, end, events_per_day=args.events // args.days, users=args.users, seed=args.seed)
    dated = events.with_columns(pl.col("event_time").dt.date().alias("day"))
    by_day = {key[0]: frame for key, frame in dated.partition_by("day", as_dict=True, include_key=False).items()}
    del dated
    at_midnight = events.filter(pl.col("event_time").dt.time() == pl.time(0)).height
    print(
        f"generated {events.height:,} events, {events['user_id'].n_unique():,} users, {START}..{end}"
        f" in {time.perf_counter() - started:.1f}s (seed {args.seed}; {at_midnight} events at exactly 00:00:00)"
    )
    print(
        f"feature days {target_days[0]}..{target_days[-1]} ({len(target_days)}), history {len(history_days)} days;"
        f" polars {pl.__version__} ({pl.thread_pool_size()} threads), pandas {pd.__version__},"
        f" duckdb {duckdb.__version__}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )

    # (a) one-off: the partials and states of the history days.
    states: dict[date, pl.DataFrame] = {}
    state, h_partials, h_states = None, 0.0, 0.0
    for day in history_days:
        partial, seconds = timed(features.daily_aggregates, by_day[day])
        h_partials += seconds
        state, seconds = timed(features.advance_state, state, partial, day)
        h_states += seconds
        states[day] = state
        keep_needed(states, target_days)
    a_history = h_partials + h_states
    # The conversion to pandas is not timed: the seed read its events into pandas.
    frame_pd, convert = timed(events.to_pandas)
    pandas_days = target_days[: args.pandas_days] if args.pandas_days else target_days
    mib = sum(s.estimated_size() for s in states.values()) / 2**20
    print(
        f"(a) history: partials {h_partials:.2f}s + states {h_states:.2f}s ({len(history_days)} days);"
        f" {len(states)} states kept for the feature days ({mib:,.0f} MiB); events to pandas: {convert:.2f}s (untimed)"
    )

    # Per feature day, the three paths one after the other, so that the machine's load shifts hit them alike;
    # each day's outputs are compared at once.
    ours: list[pl.DataFrame] = []
    a_partials, a_states, a_windows, b_times, c_times = [], [], [], [], []
    cells_b, cells_c, bad_b, bad_c = 0, 0, Counter(), Counter()
    for n, day in enumerate(target_days):
        partial, seconds = timed(features.daily_aggregates, by_day[day])
        a_partials.append(seconds)
        state, seconds = timed(features.advance_state, state, partial, day)
        a_states.append(seconds)
        states[day] = state
        window, seconds = timed(features.window_features, states, day)
        a_windows.append(seconds)
        ours.append(window)
        keep_needed(states, target_days[n + 1 :])

        theirs, seconds = timed(polars_features, events, day)
        c_times.append(seconds)
        cells, bad = compare(ours[-1], theirs, NAMES)
        cells_c, bad_c = cells_c + cells, bad_c + Counter(bad)

        line = (
            f"    {day}: ours {a_partials[-1] + a_states[-1] + a_windows[-1]:.3f}s"
            f" ({a_partials[-1]:.3f} + {a_states[-1]:.3f} + {a_windows[-1]:.3f}), polars recipe {c_times[-1]:.3f}s"
        )
        if day in pandas_days:
            theirs, seconds = timed(pandas_features, frame_pd, day)
            b_times.append(seconds)
            cells, bad = compare(ours[-1], from_pandas_features(theirs), NAMES)
            cells_b, bad_b = cells_b + cells, bad_b + Counter(bad)
            line += f", pandas recipe {seconds:.2f}s"
        print(line + (f"  MISMATCH vs polars {bad}" if bad else ""), flush=True)
    del frame_pd

    k = len(target_days)
    a_steady = sum(a_partials) + sum(a_states) + sum(a_windows)
    a_full = a_steady + a_history
    b_per_day = statistics.mean(b_times)
    b_total = b_per_day * k
    extrapolated = len(pandas_days) < k
    h = len(history_days)
    rows = [
        (f"(a) ai_pipeline steady state: {k} days", a_steady, a_steady / k, ""),
        ("    of which daily_aggregates", sum(a_partials), sum(a_partials) / k, ""),
        ("    of which advance_state", sum(a_states), sum(a_states) / k, ""),
        ("    of which window_features", sum(a_windows), sum(a_windows) / k, ""),
        (f"(a) one-off: partials + states of {h} history days", a_history, a_history / h, ""),
        ("(a) from scratch (history + steady state)", a_full, a_full / k, ""),
        ("(c) Polars recipe (filter + group_by per window, pivot)", sum(c_times), statistics.mean(c_times), ""),
        (
            "(b) pandas recipe" + (f" (extrapolated from {len(pandas_days)} days)" if extrapolated else ""),
            b_total,
            b_per_day,
            "*" if extrapolated else "",
        ),
    ]
    print()
    print(f"{'path':<62} {'seconds':>9} {'per partition':>14}")
    for name, total, per, mark in rows:
        print(f"{name:<62} {total:>8.2f}{mark:1} {per:>14.3f}")
    print("(per partition: per feature day; for the one-off row, per history day)")
    if extrapolated:
        print(f"* pandas timed on {len(pandas_days)} of {k} feature days; total = its mean per day x {k}")
    ours_per_day = [sum(t) for t in zip(a_partials, a_states, a_windows, strict=True)]
    print(
        f"per partition min/median/max: ours {min(ours_per_day):.3f}/{statistics.median(ours_per_day):.3f}/"
        f"{max(ours_per_day):.3f}s; polars recipe {min(c_times):.3f}/{statistics.median(c_times):.3f}/"
        f"{max(c_times):.3f}s; pandas recipe {min(b_times):.2f}/{statistics.median(b_times):.2f}/{max(b_times):.2f}s"
    )
    print(f"users per feature day: {statistics.mean(r.height for r in ours):,.0f}; features per user: {len(NAMES)}")
    vs_b, vs_c = b_total / a_steady, sum(c_times) / a_steady
    print()
    print(f"ratio (b)/(a) steady state: {vs_b:.1f}x  [target >= 20x: {'PASS' if vs_b >= 20 else 'FAIL'}]")
    print(f"ratio (c)/(a) steady state: {vs_c:.1f}x  [target >= 5x: {'PASS' if vs_c >= 5 else 'FAIL'}]")
    print(f"ratio (b)/(a) from scratch: {b_total / a_full:.1f}x; (c)/(a) from scratch: {sum(c_times) / a_full:.1f}x")
    print(f"agreement (a) vs (c): {cells_c:,} cells compared ({k} days), {bad_c.total():,} mismatches {dict(bad_c)}")
    print(
        f"agreement (a) vs (b): {cells_b:,} cells compared ({len(b_times)} days),"
        f" {bad_b.total():,} mismatches {dict(bad_b)}"
    )
    print(f"load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return ours, not bad_b and not bad_c


# --- benchmark 2 ----------------------------------------------------------------------------------------------


def make_entities(offline: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng([seed, 2])
    users = offline["user_id"].unique().sort().to_numpy()
    unknown = rng.random(n) < 0.05
    ids = np.where(unknown, np.char.add("nobody-", rng.integers(0, 10**6, n).astype(str)), rng.choice(users, n))
    first = end_of(offline["feature_date"].min()) - timedelta(days=1)
    span = (offline["feature_date"].max() - offline["feature_date"].min()).days + 3  # + the 2 days after
    micros = rng.integers(0, span * 86_400_000_000, n)
    return pl.DataFrame(
        {
            "user_id": ids,
            TIMESTAMP: pl.Series(micros).cast(pl.Duration("us")) + first,
            "label": rng.random(n) < 0.1,
        }
    ).with_columns(pl.col(TIMESTAMP).cast(pl.Datetime("us", "UTC")))


def pandas_training_set(entities: pd.DataFrame, offline: pd.DataFrame, ttl: timedelta) -> pd.DataFrame:
    """merge_asof on the UTC day, strictly earlier feature dates, TTL masked, in input order."""
    feature_columns = [c for c in offline.columns if c != "user_id"]
    left = entities.assign(_row=np.arange(len(entities)), _day=entities[TIMESTAMP].dt.floor("D").dt.tz_localize(None))
    left = left.sort_values("_day")
    right = offline.sort_values("feature_date")
    merged = pd.merge_asof(
        left,
        right,
        left_on="_day",
        right_on="feature_date",
        by="user_id",
        direction="backward",
        allow_exact_matches=False,
    )
    age = merged[TIMESTAMP].dt.tz_localize(None) - (merged["feature_date"] + pd.Timedelta(days=1))
    fresh = age < pd.Timedelta(ttl)
    merged[feature_columns] = merged[feature_columns].where(fresh, axis=0)
    return merged.sort_values("_row").drop(columns=["_row", "_day"]).reset_index(drop=True)


def compare_training(ours: pl.DataFrame, theirs: pd.DataFrame, columns: list[str]) -> tuple[int, dict[str, int]]:
    """(cells compared, mismatches per column): exact equality, nulls included, row by row in input order."""
    theirs_pl = pl.from_pandas(theirs)
    if ours.columns != columns or theirs_pl.columns != columns:
        return ours.height * len(columns), {"columns": len(set(columns) ^ set(ours.columns) ^ set(theirs_pl.columns))}
    bad = {}
    for name in columns:
        wrong = int((~ours[name].eq_missing(theirs_pl[name].cast(ours.schema[name]))).sum())
        if wrong:
            bad[name] = wrong
    return ours.height * len(columns), bad


def profiled(connection: duckdb.DuckDBPyConnection, entities: pl.DataFrame, ttl: timedelta, tmp: str) -> list[str]:
    """One `training_set` call under DuckDB's profiler: what ran (not an estimate), and where its time went."""
    output = Path(tmp) / "profile.json"
    connection.execute("pragma enable_profiling = 'json'")
    connection.execute(f"pragma profiling_output = '{output}'")
    try:
        _, seconds = timed(lambda: training_set(connection, entities, ttl=ttl))
    finally:
        connection.execute("pragma disable_profiling")
    profile = json.loads(output.read_text())
    operators: list[str] = []

    def walk(node: dict, depth: int) -> None:
        if node.get("operator_type"):
            operators.append(
                f"    {'  ' * depth}{node['operator_type']}: {node.get('operator_timing', 0):.3f}s,"
                f" {node.get('operator_cardinality', 0):,} rows"
            )
        for child in node.get("children", []):
            walk(child, depth + bool(node.get("operator_type")))

    walk(profile, 0)
    return [
        f"profiled call: {seconds:.3f}s in all, of which DuckDB's query {profile['latency']:.3f}s"
        f" (operators, CPU seconds summed over threads):",
        *operators,
    ]


def cached_offline(args: argparse.Namespace) -> Path:
    name = f"offline-e{args.events}-d{args.days}-u{args.users}-f{args.feature_days}-s{args.seed}.parquet"
    return CACHE_DIR / name


def bench_training(args: argparse.Namespace, partitions: list[pl.DataFrame]) -> bool:
    offline = pl.concat(partitions)
    ttl = timedelta(days=args.ttl_days)
    with tempfile.TemporaryDirectory() as tmp:
        connection = duckdb.connect(str(Path(tmp) / "warehouse.duckdb"))
        started = time.perf_counter()
        connection.execute(f"create table {OFFLINE_TABLE} as select * from offline")
        connection.execute("checkpoint")
        print()
        print(
            f"offline table {OFFLINE_TABLE}: {offline.height:,} rows x {offline.width} columns"
            f" ({offline['feature_date'].n_unique()} feature dates), written in {time.perf_counter() - started:.2f}s"
        )
        entities = make_entities(offline, args.entities, args.seed)
        entities_pd = entities.to_pandas()
        columns = [*entities.columns, "feature_date", *NAMES]
        offline_pd, load = timed(lambda: connection.execute(f"select * from {OFFLINE_TABLE}").df())
        profile = profiled(connection, entities, ttl, tmp)
        threshold = connection.execute("select current_setting('asof_loop_join_threshold')").fetchone()[0]

        ours_times, theirs_times, ours_cpu, theirs_cpu, ours, theirs = [], [], [], [], None, None
        for _ in range(args.repeat):
            cpu = time.process_time()
            ours, seconds = timed(lambda: training_set(connection, entities, ttl=ttl))
            ours_times.append(seconds)
            ours_cpu.append(time.process_time() - cpu)
            cpu = time.process_time()
            theirs, seconds = timed(pandas_training_set, entities_pd, offline_pd, ttl)
            theirs_times.append(seconds)
            theirs_cpu.append(time.process_time() - cpu)
        connection.close()
    assert ours is not None and theirs is not None

    cells, bad = compare_training(ours, theirs, columns)
    matched = ours["feature_date"].is_not_null().sum()
    known = entities.filter(~pl.col("user_id").str.starts_with("nobody-")).height
    ours_s, theirs_s = statistics.median(ours_times), statistics.median(theirs_times)
    ratio = theirs_s / ours_s
    print(
        f"entities: {entities.height:,} rows ({entities.height - known:,} unknown users), ttl {ttl};"
        f" {matched:,} rows got features, {entities.height - matched:,} nulls (unknown, first day, or stale)"
    )
    print("\n".join(profile))
    print(f"connection's asof_loop_join_threshold after the calls: {threshold}")
    print(f"{'path':<66} {'seconds':>9}")
    print(f"{'training_set, whole call':<66} {ours_s:>9.3f}")
    print(f"{'pandas merge_asof: sort, merge, TTL mask, restore order':<66} {theirs_s:>9.3f}")
    print(f"{'    + reading the offline table into pandas (not in the ratio)':<66} {load:>9.3f}")
    print(
        f"(median of {args.repeat}; ours {', '.join(f'{t:.3f}' for t in ours_times)};"
        f" pandas {', '.join(f'{t:.3f}' for t in theirs_times)})"
    )
    ours_c, theirs_c = statistics.median(ours_cpu), statistics.median(theirs_cpu)
    print(
        f"CPU seconds, all threads (median; less swayed by the machine's load than wall time): ours {ours_c:.3f},"
        f" pandas {theirs_c:.3f}: {theirs_c / ours_c:.1f}x"
    )
    print(
        f"ratio pandas/ours: {ratio:.1f}x  [target >= 10x: {'PASS' if ratio >= 10 else 'FAIL'}];"
        f" with pandas' table read: {(theirs_s + load) / ours_s:.1f}x"
    )
    print(f"agreement: {cells:,} cells compared, {sum(bad.values()):,} mismatches {bad}")
    print(f"load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return not bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000, help="events in all (spread evenly over the days)")
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--feature-days", type=int, default=30, help="the last N days get window features")
    parser.add_argument("--pandas-days", type=int, default=None, help="run pandas on the first N feature days only")
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--ttl-days", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3, help="training-set runs; the median is reported")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1M events over 100 days, 20k users, 3 feature days"
    )
    parser.add_argument(
        "--training-only",
        action="store_true",
        help="skip benchmark 1: read the offline table a full run with the same parameters cached",
    )
    args = parser.parse_args()
    if args.quick:
        args.events, args.days, args.users, args.feature_days = 1_000_000, 100, 20_000, 3
        args.entities, args.repeat = 100_000, 1

    cache = cached_offline(args)
    if args.training_only:
        if not cache.exists():
            sys.exit(f"{cache} does not exist: run once without --training-only")
        partitions, features_ok = [pl.read_parquet(cache)], True
        print(f"offline table read from {cache} (benchmark 1 skipped)")
    else:
        partitions, features_ok = bench_features(args)
        cache.parent.mkdir(parents=True, exist_ok=True)
        pl.concat(partitions).write_parquet(cache)
    training_ok = bench_training(args, partitions)
    sys.exit(0 if features_ok and training_ok else 1)


if __name__ == "__main__":
    main()
