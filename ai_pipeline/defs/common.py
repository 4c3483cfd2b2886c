"""Policy set once for every asset: partitions, ownership, backfills, the DuckDB writer pool."""

from __future__ import annotations

import warnings
from datetime import date

import dagster as dg

from ai_pipeline.lib.quality import Verdict
from ai_pipeline.settings import Settings

OWNERS = ["team:data-platform"]
# DuckDB allows one writing process per file: every asset that writes the warehouse takes this pool,
# whose limit (1) is set in dagster.yaml.
DUCKDB_POOL = "duckdb_warehouse"
# Backfills run one partition per run, so that every partition's checks are exact. The daily assets declare no
# backfill policy to get that: Dagster then tags each backfill run with its partition, which a partitioned check
# result takes its partition from (a `multi_run(1)` run carries a one-day range instead, and its check results
# would name no partition). dagster-dbt reads "no policy" as one run for the whole range, so the dbt assets
# declare this one; their dbt-test results in backfill runs name no partition (Dagster 1.13).
DBT_BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)

# Partitioned asset checks (preview) and backfill policies (beta) in Dagster 1.13 are used deliberately.
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=settings.start_date.isoformat(), timezone="UTC")


def partition_date(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


def check_result(verdict: Verdict, metadata: dict | None = None, **target: str) -> dg.AssetCheckResult:
    """A check's result from a verdict; `target` (asset_key, check_name) where the check is yielded in an asset."""
    return dg.AssetCheckResult(
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity(verdict.severity),
        description=verdict.description,
        metadata=metadata or {},
        **target,
    )
