"""`ai-pipeline`: generate a sample, run the daily pipeline through Dagster, print what happened."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from ai_pipeline.instance import instance_kind, prepare_instance_home
from ai_pipeline.settings import Settings

DEFAULT_DAYS = 7
# The run's own log stays in the instance (and the UI); the terminal gets warnings and the summary.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class DayOutcome:
    day: str
    success: bool
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # entity -> in/valid/quarantined
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)


def _default_range(days: int) -> tuple[date, date]:
    end = datetime.now(UTC).date() - timedelta(days=1)
    return end - timedelta(days=days - 1), end


def _use_instance(settings: Settings):
    from dagster import DagsterInstance

    os.environ["DAGSTER_HOME"] = str(prepare_instance_home(settings, instance_kind()))
    return DagsterInstance.get()


def run_days(settings: Settings, start: date, end: date) -> list[DayOutcome]:
    """One run of the daily job per partition, recorded in the configured Dagster instance."""
    from ai_pipeline.defs import DAILY_JOB, build_defs

    instance = _use_instance(settings)
    job = build_defs(settings).resolve_job_def(DAILY_JOB)
    outcomes = []
    day = start
    while day <= end:
        log = settings.home / "logs" / f"{DAILY_JOB}-{day}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"Running {DAILY_JOB} for {day} (dbt output: {log})", flush=True)
        # dagster-dbt echoes dbt's events to stdout; they go to the day's log file instead of the terminal.
        with log.open("w") as out, contextlib.redirect_stdout(out):
            result = job.execute_in_process(
                partition_key=day.isoformat(), instance=instance, run_config=QUIET, raise_on_error=False
            )
        outcome = DayOutcome(day.isoformat(), result.success)
        for event in result.get_asset_materialization_events():
            materialization = event.materialization
            name, meta = materialization.asset_key.path[-1], materialization.metadata
            if name.startswith("validated_") and "rows_in" in meta:
                outcome.rows[name.removeprefix("validated_")] = {
                    "in": meta["rows_in"].value,
                    "valid": meta["dagster/row_count"].value,
                    "quarantined": meta["rows_quarantined"].value,
                }
        for evaluation in result.get_asset_check_evaluations():
            if evaluation.passed:
                outcome.checks_passed += 1
            else:
                outcome.checks_failed.append(
                    f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name} ({evaluation.severity.value})"
                )
        outcomes.append(outcome)
        day += timedelta(days=1)
    return outcomes


def print_summary(settings: Settings, outcomes: list[DayOutcome]) -> None:
    print(f"\n{'partition':<12} {'run':<8} {'events in/valid/quar.':<24} {'users in/valid/quar.':<22} checks")
    for o in outcomes:
        cells = []
        for entity in ("events", "users"):
            r = o.rows.get(entity)
            cells.append(f"{r['in']}/{r['valid']}/{r['quarantined']}" if r else "-")
        status = "ok" if o.success else "FAILED"
        checks = f"{o.checks_passed} passed, {len(o.checks_failed)} failed"
        print(f"{o.day:<12} {status:<8} {cells[0]:<24} {cells[1]:<22} {checks}")
    failed = sorted({name for o in outcomes for name in o.checks_failed})
    if failed:
        print("\nFailed checks (see the asset-check view in the UI for the metadata that explains them):")
        for name in failed:
            print(f"  - {name}")
    print(
        f"\nData root:      {settings.home}"
        f"\nLanding zone:   {settings.landing}"
        f"\nWarehouse:      {settings.warehouse}  (DuckDB: tables raw_*, validated_*, quarantined_*, dbt marts)"
        f"\nDagster home:   {os.environ.get('DAGSTER_HOME')}"
        "\nOpen the UI:    make ui   (then http://127.0.0.1:3000; the runs above are under Runs)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ai-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write a realistic sample into the landing zone")
    run = sub.add_parser("run", help="materialize every daily asset for a date range through Dagster")
    demo = sub.add_parser("demo", help="generate a sample for the last days, run the pipeline, print a summary")
    for p in (gen, run):
        p.add_argument("--start", type=date.fromisoformat, required=True)
        p.add_argument("--end", type=date.fromisoformat, required=True)
    for p in (gen, demo):
        p.add_argument("--events-per-day", type=int, default=2000)
        p.add_argument("--users", type=int, default=500)
        p.add_argument("--seed", type=int, default=42)
        p.add_argument("--dirty-rate", type=float, default=0.02)
    demo.add_argument("--days", type=int, default=DEFAULT_DAYS, help="days ending yesterday (UTC)")
    sub.add_parser("dagster-home", help="print the DAGSTER_HOME of the configured instance")

    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.command == "dagster-home":
        print(prepare_instance_home(settings, instance_kind()))
        return 0
    if args.command == "demo":
        args.start, args.end = _default_range(args.days)
    if args.command in ("generate", "demo"):
        from ai_pipeline.lib.sample import generate

        days = generate(
            settings.landing,
            args.start,
            args.end,
            events_per_day=args.events_per_day,
            users=args.users,
            seed=args.seed,
            dirty_rate=args.dirty_rate,
        )
        print(
            f"Generated {sum(d.event_rows for d in days)} events and {sum(d.user_rows for d in days)} user "
            f"records for {args.start}..{args.end} under {settings.landing}"
        )
    if args.command in ("run", "demo"):
        outcomes = run_days(settings, args.start, args.end)
        print_summary(settings, outcomes)
        return 0 if all(o.success for o in outcomes) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
