"""Drift verdicts on unshifted and shifted days: the calibrated check vs the fixed PSI cut-offs it replaced.

    python benchmarks/drift.py [--days 400] [--shifted-days 200] [--sizes 100,200,300,500,1000,2000,5000]
                               [--feature amount_sum_90d] [--seed 1]

The population is one day's window features of 5,000 sample users with 100 days of history (`sample.clean_events`
-> `features.daily_aggregates` -> `features.run`), the 15 windowed numeric features the drift check judges. Each
simulated day draws a reference and a current sample of SIZE users from it (with replacement): unshifted days
have nothing to find; shifted days double one amount feature in the current sample. For every size it prints the
share of unshifted days that alarm (WARN or ERROR) and that ERROR, and the share of shifted days caught, for
`drift.drift(...).status` and for the fixed cut-offs (max PSI above 0.1 warns, above 0.25 errs), and the seconds a
verdict takes. Targets: at most 5% false alarms at every size judged (200 values a side and more), at least 90% of
the shifted days caught at 1,000 values a side.
"""

from __future__ import annotations

import argparse
import time
from datetime import date

import numpy as np
import polars as pl

from ai_pipeline.lib.feature_store import drift, features
from ai_pipeline.lib.ingest.sample import clean_events

START, END = date(2024, 1, 1), date(2024, 4, 9)


def fixed_status(report: drift.DriftReport) -> str:
    if not report.scores:
        return "not enough data"
    worst = max(report.scores.values())
    return "error" if worst > drift.ERROR_PSI else "warn" if worst > drift.WARN_PSI else "ok"


def simulate(frame: pl.DataFrame, judged: list[str], size: int, days: int, seed: int, feature: str | None):
    rng = np.random.default_rng(seed)
    calibrated, fixed, seconds = [], [], 0.0
    for _ in range(days):
        reference = frame.sample(size, with_replacement=True, seed=int(rng.integers(2**31)))
        current = frame.sample(size, with_replacement=True, seed=int(rng.integers(2**31)))
        if feature:
            current = current.with_columns(pl.col(feature) * 2)
        started = time.perf_counter()
        report = drift.drift(reference, current, judged, min_samples=min(size, drift.MIN_SAMPLES))
        calibrated.append(report.status if size >= drift.MIN_SAMPLES else "not judged")
        seconds += time.perf_counter() - started
        fixed.append(fixed_status(report))
    return calibrated, fixed, seconds / days


def share(statuses: list[str], *wanted: str) -> str:
    return f"{sum(s in wanted for s in statuses) / len(statuses):.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=400)
    parser.add_argument("--shifted-days", type=int, default=200)
    parser.add_argument("--sizes", default="100,200,300,500,1000,2000,5000")
    parser.add_argument("--feature", default="amount_sum_90d")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    events = clean_events(START, END, events_per_day=3000, users=5000, seed=3)
    [frame] = list(features.run(features.daily_aggregates(events), START, [END]))
    judged = [f.name for f in features.FEATURES if f.numeric and f.window_days]
    values = frame[args.feature].drop_nulls().to_numpy()
    print(
        f"population: {frame.height} users, {len(judged)} features judged; {args.feature} doubled has PSI "
        f"{drift.psi(values, values * 2):.3f} in the population"
    )
    print(
        f"\n{'values a side':>13} | {'unshifted days alarming':^27} | {'of which ERROR':^23} | "
        f"{'doubled ' + args.feature + ' caught':^31} | {'s per verdict':^13}"
    )
    print(
        f"{'':>13} | {'calibrated':>13} {'fixed':>13} | {'calibrated':>11} {'fixed':>11} | "
        f"{'calibrated':>15} {'fixed':>15} | {'calibrated':>13}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        null, null_fixed, seconds = simulate(frame, judged, size, args.days, args.seed + size, None)
        shifted, shifted_fixed, _ = simulate(frame, judged, size, args.shifted_days, args.seed, args.feature)
        print(
            f"{size:>13} | {share(null, 'warn', 'error'):>13} {share(null_fixed, 'warn', 'error'):>13} | "
            f"{share(null, 'error'):>11} {share(null_fixed, 'error'):>11} | "
            f"{share(shifted, 'warn', 'error'):>15} {share(shifted_fixed, 'warn', 'error'):>15} | {seconds:>13.3f}"
        )
    print(f"\n(below {drift.MIN_SAMPLES} values a side the calibrated check does not judge: 'not enough data')")


if __name__ == "__main__":
    main()
