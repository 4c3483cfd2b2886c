"""Check results reported from verdicts: per day for a run over a range of days (`DayChecks`), or one result."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import dagster as dg

from ai_pipeline.defs.dagster_internals import AssetCheckEvaluationTargetMaterializationData
from ai_pipeline.lib.quality import Verdict


class DayChecks:
    """A step's partitioned check results, one per check and day of its run: what Dagster records for a
    one-partition run.

    Dagster 1.13 gives an `AssetCheckResult` of a range run no partition; an evaluation names its day, its
    blocking flag (a failed blocking ERROR still fails the step) and the day's materialization it judged. With the
    first evaluation of each check, its step output is emitted too (as `AssetCheckResult` does), so that blocking
    checks gate the steps after them in the run. An asset's materializations are looked up once for all the run's
    days, on its first check: call `results` after the asset's output is yielded.
    """

    def __init__(self, context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext):
        self._context = context
        self._checked = context if isinstance(context, dg.AssetCheckExecutionContext) else context.assets_def
        self._latest: dict[dg.AssetKey, dict[str, dg.EventLogRecord | None]] = {}
        self._emitted: set[dg.AssetCheckKey] = set()

    def _materialization(self, asset_key: dg.AssetKey, partition: str) -> dg.EventLogRecord | None:
        if asset_key not in self._latest:
            self._latest[asset_key] = self._fetch(asset_key, self._context.partition_keys)
        latest = self._latest[asset_key]
        if partition not in latest:  # not materialized by this run: its newest record may be older, or none
            latest[partition] = self._fetch(asset_key, [partition]).get(partition)
        return latest[partition]

    def _fetch(self, asset_key: dg.AssetKey, partitions: list[str]) -> dict[str, dg.EventLogRecord]:
        records = self._context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=partitions), limit=len(partitions)
        ).records
        latest: dict[str, dg.EventLogRecord] = {}
        for record in records:  # newest first
            latest.setdefault(record.partition_key, record)
        return latest

    def results(
        self,
        day: date,
        verdict: Verdict,
        metadata: dict | None = None,
        *,
        asset_key: str | dg.AssetKey,
        check_name: str,
    ) -> Iterator[dg.Output | dg.AssetCheckEvaluation]:
        """The day's evaluation of the check, preceded on the check's first day by its (empty) step output."""
        key = dg.AssetCheckKey(dg.AssetKey.from_coercible(asset_key), check_name)
        spec = next(s for s in self._checked.check_specs if s.key == key)
        if key not in self._emitted and key in self._context.selected_asset_check_keys:
            self._emitted.add(key)
            yield dg.Output(None, output_name=spec.get_python_identifier())
        latest = self._materialization(key.asset_key, day.isoformat())
        yield dg.AssetCheckEvaluation(
            asset_key=key.asset_key,
            check_name=check_name,
            passed=verdict.passed,
            severity=dg.AssetCheckSeverity(verdict.severity),
            description=verdict.description,
            metadata=metadata or {},
            blocking=spec.blocking,
            partition=day.isoformat(),
            target_materialization_data=AssetCheckEvaluationTargetMaterializationData(
                storage_id=latest.storage_id, run_id=latest.run_id, timestamp=latest.timestamp
            )
            if latest
            else None,
        )


def check_result(verdict: Verdict, metadata: dict | None = None, **target: str) -> dg.AssetCheckResult:
    """A check's result from a verdict; `target` (asset_key, check_name) where the check is yielded in an asset."""
    return dg.AssetCheckResult(
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity(verdict.severity),
        description=verdict.description,
        metadata=metadata or {},
        **target,
    )
