"""The dbt mart fct_user_daily_activity: aggregating events in SQL vs reading the feature store's partials.

    .venv/bin/python benchmarks/marts_aggregation.py [--days 30] [--events-per-day 20000] [--users 5000]

`sample.clean_events` generates DAYS days of validated events (from START, seed 42), written to a DuckDB file
table `validated_events` (amount DOUBLE, as the project stores it). The mart is then built day by day, one
query per day (`where partition_date = ?` / `where activity_date = ?`, as the incremental model's runs filter),
the first day creating its table and the others inserting into it, two ways:
  (A) old: the mart's former SQL, a group-by of the day's events per user (count, purchases, sum(amount),
      count(distinct category), first/last event), into `fct_old`;
  (B) new: `features.daily_aggregates` (Polars) of each day's events, the partials the feature store computes
      anyway, timed apart as "partials" and written to `user_daily_aggregates`; then the mart's new SQL, a
      projection of that day's partials (len(category__values) for the distinct categories), into `fct_new`.
Each step runs REPEAT times (old and new alternating), the median of the sums over the days is reported, with
the ratio old/new of the mart's own cost (and, for scale, old vs partials + new).
Checks: both marts hold the same rows for user_id, activity_date, event_count, purchase_count,
distinct_categories, first_event_at and last_event_at (exit 1 otherwise). Money: the user-days where the old
DOUBLE amount_sum, cast to DECIMAL(38,9), differs from the partials' exact DECIMAL(38,9) amount__sum, and the
same for the lifetime total per user (the sum over days, as dim_users computes it), with the largest absolute
error of the doubles (measured exactly, with Python's Decimal of each double).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl

from ai_pipeline.lib.feature_store import features
from ai_pipeline.lib.ingest.sample import clean_events

START = date(2024, 1, 1)
REPEAT = 3
SEED = 42

OLD_SQL = """
select user_id, partition_date as activity_date, count(*) as event_count,
  count(*) filter (where event_type = 'purchase') as purchase_count,
  coalesce(sum(amount), 0) as amount_sum, count(distinct category) as distinct_categories,
  min(event_time) as first_event_at, max(event_time) as last_event_at
from validated_events where partition_date = ? group by user_id, partition_date
"""
NEW_SQL = """
select user_id, activity_date, event_id__count as event_count,
  event_id__count__event_type_purchase as purchase_count, amount__sum as amount_sum,
  len(category__values) as distinct_categories, event_time__min as first_event_at, event_time__max as last_event_at
from user_daily_aggregates where activity_date = ?
"""
COMPARED = "user_id, activity_date, event_count, purchase_count, distinct_categories, first_event_at, last_event_at"


def build_mart(con: duckdb.DuckDBPyConnection, table: str, sql: str, days: list[date]) -> float:
    """Seconds to build `table` from `sql`, one query per day (the first creates it)."""
    con.execute(f"drop table if exists {table}")
    started = time.perf_counter()
    for n, day in enumerate(days):
        con.execute(f"create table {table} as {sql}" if n == 0 else f"insert into {table} {sql}", [day])
    return time.perf_counter() - started


def timed(step: Callable[[], object]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def max_error(frame: pl.DataFrame, double: str, exact: str) -> Decimal:
    """The largest |double - exact|, exactly: Decimal(float) is the double's exact binary value."""
    return max(
        (abs(Decimal(d) - e) for d, e in zip(frame[double].to_list(), frame[exact].to_list(), strict=True)),
        default=Decimal(0),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--events-per-day", type=int, default=20000)
    parser.add_argument("--users", type=int, default=5000)
    args = parser.parse_args()
    days = [START + timedelta(days=n) for n in range(args.days)]

    t0 = time.perf_counter()
    events = clean_events(days[0], days[-1], events_per_day=args.events_per_day, users=args.users, seed=SEED)
    if "partition_date" not in events.columns:
        events = events.with_columns(pl.col("event_time").dt.date().alias("partition_date"))
    per_day = events.partition_by("partition_date", as_dict=True, maintain_order=True)
    day_frames = [per_day[(day,)] for day in days]
    print(
        f"{events.height:,} events, {args.days} days x {args.events_per_day:,}, {args.users:,} users"
        f" (generated in {time.perf_counter() - t0:.1f}s); duckdb {duckdb.__version__}, polars {pl.__version__}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect(str(Path(tmp) / "warehouse.duckdb"))
        con.execute("create table validated_events as select * from events order by partition_date, event_time")

        # (B, first half) the partials, as the user_daily_aggregates asset computes them, one call per day.
        partials_runs, partials = [], []
        for _ in range(REPEAT):
            out: list[pl.DataFrame] = []
            partials_runs.append(timed(lambda out=out: out.extend(features.daily_aggregates(f) for f in day_frames)))
            partials = out
        daily = pl.concat(partials)
        con.execute("create table user_daily_aggregates as select * from daily")

        # (A) and (B, second half), alternating.
        old_runs, new_runs = [], []
        for _ in range(REPEAT):
            old_runs.append(build_mart(con, "fct_old", OLD_SQL, days))
            new_runs.append(build_mart(con, "fct_new", NEW_SQL, days))
        old_s, new_s, partials_s = (
            statistics.median(old_runs),
            statistics.median(new_runs),
            statistics.median(partials_runs),
        )

        mart_rows = con.execute("select count(*) from fct_old").fetchone()[0]
        print(f"\nmedian of {REPEAT} runs, summed over {args.days} daily runs; {mart_rows:,} mart rows (user-days)")
        print(f"{'step':<44}{'seconds':>9}{'input rows':>13}{'input rows/s':>15}")
        for label, seconds, rows in (
            ("(A) old mart SQL over validated_events", old_s, events.height),
            ("(B) new mart SQL over user_daily_aggregates", new_s, daily.height),
            ("    partials (paid by the features anyway)", partials_s, events.height),
        ):
            print(f"{label:<44}{seconds:>9.3f}{rows:>13,}{rows / seconds:>15,.0f}")
        print(f"ratio old/new, the mart's own cost: {old_s / new_s:.1f}x")
        print(f"(for scale: old / (partials + new) = {old_s / (partials_s + new_s):.2f}x)")

        # Equality of everything but the money.
        only_old, only_new = (
            con.execute(
                f"select count(*) from (select {COMPARED} from {a} except all select {COMPARED} from {b})"
            ).fetchone()[0]
            for a, b in (("fct_old", "fct_new"), ("fct_new", "fct_old"))
        )
        new_rows = con.execute("select count(*) from fct_new").fetchone()[0]
        same = only_old == only_new == 0 and new_rows == mart_rows
        print(
            f"\nequality ({COMPARED}): {mart_rows:,} old rows, {new_rows:,} new rows,"
            f" {only_old:,} only in old, {only_new:,} only in new -> {'identical' if same else 'DIFFERENT'}"
        )

        # Money: DOUBLE (old) vs exact DECIMAL(38,9) (partials); the casts and comparisons in DuckDB.
        user_days = """select o.amount_sum as double_sum, n.amount_sum as exact_sum
            from fct_old o join fct_new n using (user_id, activity_date)"""
        lifetime = """select user_id, o.double_sum, n.exact_sum
            from (select user_id, sum(amount_sum) as double_sum from fct_old group by user_id) o
            join (select user_id, sum(amount_sum) as exact_sum from fct_new group by user_id) n using (user_id)"""
        print("money, old DOUBLE amount_sum cast to DECIMAL(38,9) vs the exact amount__sum:")
        for label, sql in (("user-days", user_days), ("lifetime per user", lifetime)):
            frame = con.execute(
                f"""select double_sum, exact_sum,
                  cast(double_sum as decimal(38, 9)) <> exact_sum as differ,
                  cast(round(double_sum, 2) as decimal(38, 9)) <> exact_sum as differ_at_cent
                from ({sql})"""
            ).pl()
            print(
                f"  {label:<18}{frame['differ'].sum():>8,} of {frame.height:,} differ"
                f" (at the cent: {frame['differ_at_cent'].sum():,});"
                f" max |double - exact| = {max_error(frame, 'double_sum', 'exact_sum'):.2e}"
            )
        con.close()
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
