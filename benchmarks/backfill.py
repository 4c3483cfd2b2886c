"""Backfill of the events lane and the features, end to end, through Dagster's own machinery: wall vs compute.

Writes `--days` days (default 365) of sample landing files, starts the webserver and the daemon over a fresh
embedded instance (every sensor and automation stopped, so only the backfill runs), and launches ONE asset backfill
of every daily asset (raw sources, validation, dbt marts, features, online store) over exactly those days through
GraphQL `launchPartitionBackfill` (per-asset ranges: partition names would also target the windows of the 90 days
after them, whose states do not exist). Every daily asset backfills in runs of up to 30 days (`DAILY_BACKFILL`).
When it has finished, every run's step timings come from the instance:

- wall: from the backfill's launch to the end of its last run;
- compute: the sum, over the backfill's runs, of each step's execution time (Dagster's step stats: what the
  asset and check functions, dbt included, took);
- wall / compute: what orchestration adds (queueing, process start, code loading, event log, the feature
  chain's ordering). Target <= 1.5x.

    .venv/bin/python benchmarks/backfill.py --days 365
    .venv/bin/python benchmarks/backfill.py --days 14     # a quick measurement of the same ratio
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from ai_pipeline.defs import build_defs
from ai_pipeline.defs.keys import DAILY_JOB
from ai_pipeline.lib.ingest.sample import generate
from ai_pipeline.settings import Settings
from ai_pipeline_support.dagster_server import dagster_server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--events-per-day", type=int, default=2000)
    parser.add_argument("--users", type=int, default=500)
    args = parser.parse_args()

    start = date(2024, 1, 1)
    days = [start + timedelta(days=n) for n in range(args.days)]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        began = time.perf_counter()
        generate(Settings(home=home).landing, days[0], days[-1], events_per_day=args.events_per_day, users=args.users)
        print(f"{args.days} days x {args.events_per_day} events written in {time.perf_counter() - began:.1f}s")
        settings = Settings(home=home, start_date=start)
        defs = build_defs(settings)
        graph = defs.resolve_asset_graph()
        keys = defs.resolve_job_def(DAILY_JOB).asset_layer.executable_asset_keys
        assets = sorted(k.to_user_string() for k in keys if graph.get(k).partitions_def is not None)
        # The dbt models rebuilt in full: once, after their parents' ranges.
        whole = sorted(k.to_user_string() for k in keys if graph.get(k).partitions_def is None)
        with dagster_server(home, start_date=start, instance="embedded") as server:
            backfill = server.launch_backfill(assets, [d.isoformat() for d in days], exact=True, unpartitioned=whole)
            status = server.wait_for_backfill(backfill, timeout_s=24 * 3600)
            with server.instance() as instance:
                launched = instance.get_backfill(backfill).backfill_timestamp
                records = instance.get_run_records(dg.RunsFilter(tags={"dagster/backfill": backfill}))
                runs = [(r, instance.get_run_step_stats(r.dagster_run.run_id)) for r in records]
    ended = [r.end_time for r, _ in runs if r.end_time]
    wall = max(ended) - launched
    compute = [sum(s.end_time - s.start_time for s in steps if s.end_time and s.start_time) for _, steps in runs]
    durations = [r.end_time - r.start_time for r, _ in runs if r.end_time and r.start_time]
    failed = [r.dagster_run.run_id for r, _ in runs if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
    print(f"backfill {backfill}: {status}; {len(runs)} runs, {len(failed)} not successful {failed[:3]}")
    print(f"assets: {', '.join(assets)}; rebuilt in full: {', '.join(whole)}")
    print(f"{'':<52} {'seconds':>10}")
    print(f"{'wall: launch to the last run end':<52} {wall:>10.1f}")
    print(f"{'compute: sum of the steps of every run':<52} {sum(compute):>10.1f}")
    print(f"{'    sum of run durations (start to end)':<52} {sum(durations):>10.1f}")
    print(
        f"{'    per run: median compute / median run duration':<52} {statistics.median(compute):>5.1f} /"
        f" {statistics.median(durations):.1f}"
    )
    ratio = wall / sum(compute)
    print(f"ratio wall / compute: {ratio:.2f}x  [target <= 1.5x: {'PASS' if ratio <= 1.5 else 'FAIL'}]")
    return 0 if status == "COMPLETED_SUCCESS" and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
