"""Online store: publish time and lookup latency, embedded SQLite vs PostgreSQL.

    python benchmarks/online_lookup.py [--users 100000] [--days 90] [--events-per-day 83333] [--lookups 2000]
                                       [--batch 100] [--warmup 200] [--unknown-share 0.05] [--dsn DSN] [--quick]

One day of window features (`sample.clean_events` -> `features.daily_aggregates` per day ->
`features.run`, which advances the running state day by day from the first day and computes
`features.window_features` of the last day) is published with `publish` to `SqliteOnlineStore` (a file in a
temporary directory) and to `PostgresOnlineStore` (table `public.bench_online_user_features`, dropped at the
end). Then LOOKUPS calls of `lookup` with BATCH random user ids each (UNKNOWN_SHARE of them unknown users) are
timed one by one, after WARMUP untimed calls; the two backends take turns call by call, so that the shared
machine's load shifts hit both alike. It prints publish seconds and the p50/p99/mean/max latency in ms, and
checks every lookup against the published frame (same rows in the request's order, unknown users null): the
process exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import psycopg2

from ai_pipeline.lib.feature_store import features
from ai_pipeline.lib.feature_store.online_store import PostgresOnlineStore, SqliteOnlineStore
from ai_pipeline.lib.ingest.sample import clean_events

START = date(2024, 1, 1)
DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
PG_TABLE = "public.bench_online_user_features"


def feature_day(users: int, days: int, events_per_day: int, seed: int) -> pl.DataFrame:
    """The window features of the last of `days` days, computed as the pipeline does."""
    end = START + timedelta(days=days - 1)
    events = clean_events(START, end, events_per_day=events_per_day, users=users, seed=seed)
    dated = events.with_columns(pl.col("event_time").dt.date().alias("day"))
    partials = [
        features.daily_aggregates(frame)
        for _, frame in sorted(dated.partition_by("day", as_dict=True, include_key=False).items())
    ]
    (frame,) = features.run(pl.concat(partials), START, [end])
    return frame


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=features.HORIZON)
    parser.add_argument("--events-per-day", type=int, default=83_333)
    parser.add_argument("--lookups", type=int, default=2_000, help="timed lookups per backend")
    parser.add_argument("--batch", type=int, default=100, help="user ids per lookup")
    parser.add_argument("--warmup", type=int, default=200, help="untimed lookups per backend first")
    parser.add_argument("--unknown-share", type=float, default=0.05, help="share of ids that are unknown users")
    parser.add_argument("--dsn", default=DSN)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quick", action="store_true", help="smoke run: 10k users, 30 days, 200 lookups")
    args = parser.parse_args()
    if args.quick:
        args.users, args.days, args.events_per_day, args.lookups, args.warmup = 10_000, 30, 10_000, 200, 20

    started = time.perf_counter()
    frame = feature_day(args.users, args.days, args.events_per_day, args.seed)
    day = frame["feature_date"][0]
    print(
        f"features of {day}: {frame.height:,} users x {frame.width} columns, computed in"
        f" {time.perf_counter() - started:.1f}s ({args.days} days x {args.events_per_day:,} events, seed {args.seed})"
    )

    rng = np.random.default_rng([args.seed, 3])
    known = frame["user_id"].to_numpy()
    batches = []
    for _ in range(args.warmup + args.lookups):
        ids = rng.choice(known, args.batch, replace=False).astype(object)
        unknown = rng.random(args.batch) < args.unknown_share
        ids[unknown] = [f"nobody-{n}" for n in rng.integers(0, 10**6, int(unknown.sum()))]
        batches.append(ids.tolist())

    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        stores = [SqliteOnlineStore(Path(tmp) / "online.sqlite"), PostgresOnlineStore(args.dsn, table=PG_TABLE)]
        try:
            publish = {}
            for store in stores:
                started = time.perf_counter()
                store.publish(frame)
                publish[store.name] = time.perf_counter() - started
                assert store.feature_date() == day, (store.name, store.feature_date())

            latencies: dict[str, list[float]] = {store.name: [] for store in stores}
            results: dict[str, list[pl.DataFrame]] = {store.name: [] for store in stores}
            for n, ids in enumerate(batches):
                for store in stores:
                    started = time.perf_counter()
                    found = store.lookup(ids)
                    seconds = time.perf_counter() - started
                    if n >= args.warmup:
                        latencies[store.name].append(seconds * 1000)
                        results[store.name].append(found)
        finally:
            stores[1].close()
            with psycopg2.connect(args.dsn) as connection, connection.cursor() as cursor:
                cursor.execute(f"drop table if exists {PG_TABLE}")
            connection.close()

    for store in stores:
        for ids, found in zip(batches[args.warmup :], results[store.name], strict=True):
            expected = pl.DataFrame({"user_id": ids}, schema={"user_id": pl.String}).join(
                frame, on="user_id", how="left", maintain_order="left"
            )
            if not found.equals(expected):
                failures += 1

    print()
    print(f"{args.lookups:,} lookups of {args.batch} ids per backend (after {args.warmup} warm-up), interleaved")
    print(f"{'backend':<12} {'publish s':>10} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'max ms':>8} {'ids/s':>10}")
    for store in stores:
        ms = latencies[store.name]
        print(
            f"{store.name:<12} {publish[store.name]:>10.2f} {percentile(ms, 50):>8.2f} {percentile(ms, 99):>8.2f}"
            f" {statistics.mean(ms):>8.2f} {max(ms):>8.2f} {args.batch * 1000 / statistics.mean(ms):>10,.0f}"
        )
    checked = len(stores) * args.lookups
    print(f"results checked against the published frame: {checked:,} lookups, {failures} differ")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
