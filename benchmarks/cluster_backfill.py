"""A backfill of the events lane in each execution mode and table format, side by side.

    .venv/bin/python benchmarks/cluster_backfill.py [--days 30] [--events-per-day 2000] [--users 500]

Writes `--days` days of sample landing files once, then runs `ai-pipeline run --job daily_pipeline` over them (one
range run per 30 days, as a backfill does) in data roots holding the same files:

- embedded: every step in the run's process, SQLite instance (`AI_PIPELINE_EXECUTOR=in_process`), with the tables
  in the DuckDB file (the reference) and in Delta Lake (`AI_PIPELINE_TABLE_FORMAT=delta`): what the lake's writes
  and reads cost against the file's for the same days;
- cluster: the run's process orchestrates, `ai-pipeline worker` processes execute the steps
  (`AI_PIPELINE_EXECUTOR=celery`, Redis broker, a fresh PostgreSQL instance database): 2 workers on the DuckDB file
  (one warehouse writer at a time), 1 and 2 workers on the lake (up to 8 at once).

Per mode: wall time of the command; summed step time (Dagster's step stats: what the steps' functions took);
wall / summed (what orchestration adds, or below 1 what steps side by side save); wall relative to embedded. Every
table of every mode is compared with the embedded DuckDB run's (rows sorted, write times left out): a mode that
differs is reported and the script exits 1.

Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (`scripts/ensure-postgres`, `scripts/ensure-brokers`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from ai_pipeline.instance import prepare_instance_home
from ai_pipeline.lib import lakehouse
from ai_pipeline.lib.ingest.sample import generate
from ai_pipeline.settings import PROJECT_ROOT, Settings
from ai_pipeline_support.fleet import lake_tables, redis_url, warehouse_tables, workers
from ai_pipeline_support.postgres import postgres_database

START = date(2024, 1, 1)
FORMATS = {"duckdb": "DuckDB file", "delta": "Delta Lake"}


def _run(home: Path, end: date, env: dict[str, str]) -> float:
    cli = Path(sys.executable).parent / "ai-pipeline"
    args = [str(cli), "run", "--start", START.isoformat(), "--end", end.isoformat(), "--job", "daily_pipeline"]
    began = time.perf_counter()
    with (home / "run.log").open("w") as log:
        code = subprocess.run(args, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - began
    if code != 0:
        raise SystemExit(f"ai-pipeline run failed in {home}:\n{(home / 'run.log').read_text()[-3000:]}")
    return wall


def _steps(instance_home: Path) -> dict[str, float]:
    """Seconds per step, summed over the runs (Dagster's step stats)."""
    found: dict[str, float] = {}
    with dg.DagsterInstance.from_config(str(instance_home)) as instance:
        for run in instance.get_runs():
            for s in instance.get_run_step_stats(run.run_id):
                found[s.step_key] = found.get(s.step_key, 0.0) + (s.end_time or 0) - (s.start_time or 0)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--events-per-day", type=int, default=2000)
    parser.add_argument("--users", type=int, default=500)
    args = parser.parse_args()
    end = START + timedelta(days=args.days - 1)

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        landing = root / "landing"
        generate(landing, START, end, events_per_day=args.events_per_day, users=args.users)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AI_PIPELINE_", "DAGSTER_"))}
        base["AI_PIPELINE_START_DATE"] = START.isoformat()

        def home_for(name: str) -> Settings:
            settings = Settings(home=root / name, start_date=START)
            shutil.copytree(landing, settings.landing)
            return settings

        for table_format in ("duckdb", "delta"):
            settings = home_for(f"embedded-{table_format}")
            env = {**base, "AI_PIPELINE_HOME": str(settings.home), "AI_PIPELINE_TABLE_FORMAT": table_format}
            wall = _run(settings.home, end, env)
            results.append((f"embedded, {FORMATS[table_format]}", wall, _steps(settings.dagster_home), settings))
        for table_format, count in (("duckdb", 2), ("delta", 1), ("delta", 2)):
            settings = home_for(f"cluster-{table_format}-{count}")
            with postgres_database() as pg:
                env = {
                    **base,
                    **pg,
                    "AI_PIPELINE_HOME": str(settings.home),
                    "AI_PIPELINE_INSTANCE": "postgres",
                    "AI_PIPELINE_EXECUTOR": "celery",
                    "AI_PIPELINE_CELERY_BROKER": redis_url(),
                    "AI_PIPELINE_TABLE_FORMAT": table_format,
                }
                names = [f"worker-{n}" for n in range(1, count + 1)]
                with workers(names, env, settings.home):
                    wall = _run(settings.home, end, env)
                os.environ.update(pg)  # the instance's dagster.yaml reads DAGSTER_PG_* from this process
                steps = _steps(prepare_instance_home(settings, "postgres", env))
            name = f"{count} worker{'s' if count > 1 else ''}, {FORMATS[table_format]}"
            results.append((name, wall, steps, settings))

        reference = warehouse_tables(results[0][3].warehouse)
        print(f"\n{args.days} days x {args.events_per_day} events, {os.cpu_count()} CPUs")
        print(f"{'mode':<26} {'wall s':>8} {'steps s':>8} {'wall/steps':>10} {'vs embedded':>12}  tables")
        same_everywhere = True
        for name, wall, steps, settings in results:
            lake = settings.lake.is_dir() and lakehouse.tables(settings.lake)
            same = (lake_tables(settings.lake) if lake else warehouse_tables(settings.warehouse)) == reference
            same_everywhere &= same
            total = sum(steps.values())
            print(
                f"{name:<26} {wall:>8.1f} {total:>8.1f} {wall / total:>10.2f} {wall / results[0][1]:>11.2f}x  "
                f"{'identical' if same else 'DIFFERENT'}"
            )
        events = args.days * args.events_per_day
        print(f"\nSlowest steps ({results[0][0]}; {results[1][0]}), seconds and events per second of step time:")
        duckdb_steps, lake_steps = results[0][2], results[1][2]
        for step in sorted(duckdb_steps, key=duckdb_steps.get, reverse=True)[:8]:
            on_lake = lake_steps.get(step, 0.0)
            print(
                f"  {step:<34} {duckdb_steps[step]:>6.1f} s {events / duckdb_steps[step]:>9,.0f}/s"
                f"   {on_lake:>6.1f} s {events / on_lake if on_lake else 0:>9,.0f}/s"
            )
    return 0 if same_everywhere else 1


if __name__ == "__main__":
    sys.exit(main())
