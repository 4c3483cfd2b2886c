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
# One run per partition keeps every partition's checks exact (a range run evaluates a check once).
DAILY_BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)

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
