"""Policy set once for every asset: ownership, daily partitions, backfills in ranges."""

from __future__ import annotations

import warnings
from datetime import date

import dagster as dg

from ai_pipeline.defs.keys import DAILY_JOB, LANE_TAG, TRAINING_JOB
from ai_pipeline.settings import Settings

OWNERS = ["team:data-platform"]
# Every daily asset backfills in runs of up to 30 consecutive days: one run per day would spend more time
# starting runs than computing (benchmarks/backfill.py), and the feature state, which needs day D-1 before D,
# would wait for a daemon tick per day. 30 days bounds what one run holds in memory (a month of one lane).
# Each asset loops over `partition_days`, and its checks report one result per day (`DayChecks`).
DAILY_BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=30)

# The daily lanes: their state is cumulative, so the instance runs one run of each at a time (LANE_TAG).
DAILY_LANES = (DAILY_JOB, TRAINING_JOB)


def lane_tags(job: str) -> dict[str, str]:
    """The run tags of a run of `job`'s lane: the lane's tag for a daily lane, nothing for the documents lane."""
    return {LANE_TAG: job} if job in DAILY_LANES else {}


# Sensors' minimum intervals, in seconds: those that react to files landing, rows arriving late, runs failing and
# automation conditions tick every 30 s; those that poll a database, a document tree or a feedback store every 60 s.
REACT_INTERVAL_S = 30
POLL_INTERVAL_S = 60


def sensor_interval(settings: Settings, default_s: int) -> int:
    """A sensor's minimum interval: `default_s`, unless AI_PIPELINE_SENSOR_INTERVAL_S sets one for every sensor."""
    return settings.sensor_interval_s or default_s


# Partitioned asset checks (preview) and backfill policies (beta) in Dagster 1.13 are used deliberately.
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=settings.start_date.isoformat(), timezone="UTC")


def daily_asset(
    name: str,
    *,
    partitions_def: dg.PartitionsDefinition,
    deps=(),
    check_specs=(),
    pool=None,
    required_resource_keys=None,
    **spec,
):
    """`@dg.asset` for one daily asset, with `DAILY_BACKFILL`; subsettable so that its checks' per-day results
    (`DayChecks`) stand in for the check outputs. `spec` goes to the `AssetOut` (description, group, kinds...)."""
    return dg.multi_asset(
        name=name,
        outs={name: dg.AssetOut(owners=OWNERS, **spec)},
        deps=list(deps),
        partitions_def=partitions_def,
        check_specs=list(check_specs),
        pool=pool,
        required_resource_keys=required_resource_keys,
        backfill_policy=DAILY_BACKFILL,
        can_subset=True,
    )


def partition_date(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


def partition_days(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> list[date]:
    """The run's days in order: one for a single partition, up to `DAILY_BACKFILL`'s limit for a backfill range."""
    return sorted(date.fromisoformat(key) for key in context.partition_keys)
