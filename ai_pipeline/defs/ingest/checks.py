"""Asset checks on the validated tables: conservation, quarantine rate, duplicates, Great Expectations.

Each check reads its partition back from the warehouse, so it can be re-run on its own from the UI.
"""

from collections.abc import Iterable

import dagster as dg
from dagster_duckdb import DuckDBResource

from ai_pipeline.defs.common import check_result, partition_date
from ai_pipeline.defs.ingest.assets import arrived_sources, read_partition
from ai_pipeline.lib import expectations, quality

CONSERVATION_CHECK = "rows_in_equal_valid_plus_quarantined"
QUARANTINE_RATE_CHECK = "quarantine_rate_below_threshold"
DUPLICATES_CHECK = "duplicate_keys_resolved"
EXPLAINED_CHECK = "every_row_has_reason_and_raw_record"

_COUNT = "select count(*) from main.{table} where partition_date = ?"
_UNEXPLAINED = """
select
    count(*) filter (where len(reasons) = 0),
    count(*) filter (where _raw is null and not list_contains(list_transform(reasons, r -> r.rule), 'read_error'))
from main.{table}
where partition_date = ?
"""
_REASON_COUNTS = """
select r.field || ':' || r.rule as reason, count(*) as n
from (select unnest(reasons) as r from main.{table} where partition_date = ?)
group by all
order by n desc, reason
"""
_DUPLICATES = """
with duplicates as (
    select list_filter(reasons, r -> r.rule = 'duplicate') as found
    from main.{table}
    where partition_date = ?
)
select
    count(*) filter (where len(list_filter(found, r -> starts_with(r.message, 'identical'))) > 0),
    count(*) filter (where len(list_filter(found, r -> starts_with(r.message, 'conflicting'))) > 0)
from duplicates
"""


def ingest_checks(
    entity: str,
    raw_keys: Iterable[str],
    *,
    suites: Iterable[str],
    partitions: dg.PartitionsDefinition,
) -> list[dg.AssetChecksDefinition]:
    """Checks for `validated_<entity>`; `suites` are Great Expectations suite names (each declares its severity)."""
    raw_keys = list(raw_keys)
    valid, quarantined = f"validated_{entity}", f"quarantined_{entity}"

    def counts(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource) -> tuple[int, int, int]:
        day = partition_date(context)
        with warehouse.get_connection() as conn:
            rows_in = sum(
                conn.execute(_COUNT.format(table=t), [day]).fetchone()[0] for t in arrived_sources(context, raw_keys)
            )
            n_valid = conn.execute(_COUNT.format(table=valid), [day]).fetchone()[0]
            n_quarantined = conn.execute(_COUNT.format(table=quarantined), [day]).fetchone()[0]
        return rows_in, n_valid, n_quarantined

    @dg.asset_check(
        asset=valid,
        name=CONSERVATION_CHECK,
        description=f"Nothing is lost: raw rows = {valid} + {quarantined}, per partition.",
        blocking=True,
        partitions_def=partitions,
        additional_deps=[quarantined, *raw_keys],
    )
    def conservation(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource):
        rows_in, n_valid, n_quarantined = counts(context, warehouse)
        verdict = quality.conservation(rows_in, n_valid, n_quarantined)
        return check_result(verdict, {"rows_in": rows_in, "rows_valid": n_valid, "rows_quarantined": n_quarantined})

    @dg.asset_check(
        asset=valid,
        name=QUARANTINE_RATE_CHECK,
        description=f"WARN above {quality.QUARANTINE_WARN_RATE:.0%} quarantined rows, ERROR (blocking) above "
        f"{quality.QUARANTINE_ERROR_RATE:.0%}.",
        blocking=True,
        partitions_def=partitions,
        additional_deps=[quarantined],
    )
    def quarantine_rate(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource):
        rows_in, _, n_quarantined = counts(context, warehouse)
        verdict = quality.quarantine_rate(rows_in, n_quarantined)
        rate = n_quarantined / rows_in if rows_in else 0.0
        return check_result(verdict, {"quarantine_rate": round(rate, 6), "rows_quarantined": n_quarantined})

    @dg.asset_check(
        asset=valid,
        name=DUPLICATES_CHECK,
        description="Duplicate keys within the partition and across sources: the first by lineage is kept, the "
        "others are quarantined and counted here.",
        partitions_def=partitions,
        additional_deps=[quarantined],
    )
    def duplicates(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource):
        with warehouse.get_connection() as conn:
            identical, conflicting = conn.execute(
                _DUPLICATES.format(table=quarantined), [partition_date(context)]
            ).fetchone()
        verdict = quality.duplicates(identical, conflicting)
        return check_result(verdict, {"identical_duplicates": identical, "conflicting_duplicates": conflicting})

    def suite_check(suite: str) -> dg.AssetChecksDefinition:
        severity = expectations.SEVERITY[suite]

        @dg.asset_check(
            asset=valid,
            name=f"great_expectations_{suite}",
            description=f"Great Expectations suite `{suite}` on the partition ({severity}"
            f"{', blocking' if severity == expectations.ERROR else ''}).",
            blocking=severity == expectations.ERROR,
            partitions_def=partitions,
        )
        def _check(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource):
            frame = read_partition(warehouse, valid, partition_date(context))
            outcome = expectations.run_suite(suite, frame)
            metadata = outcome.as_metadata()
            metadata["failures"] = dg.MetadataValue.md(metadata["failures"])
            return dg.AssetCheckResult(
                passed=outcome.success,
                severity=dg.AssetCheckSeverity(outcome.severity),
                description=f"{len(outcome.failed)} of {outcome.evaluated} expectations failed",
                metadata=metadata,
            )

        return _check

    @dg.asset_check(
        asset=quarantined,
        name=EXPLAINED_CHECK,
        description="Every quarantined row says why (at least one reason) and keeps its raw record; the "
        "metadata counts reasons by field and rule.",
        partitions_def=partitions,
    )
    def explained(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource):
        day = partition_date(context)
        with warehouse.get_connection() as conn:
            no_reason, no_raw = conn.execute(_UNEXPLAINED.format(table=quarantined), [day]).fetchone()
            reasons = dict(conn.execute(_REASON_COUNTS.format(table=quarantined), [day]).fetchall())
        return dg.AssetCheckResult(
            passed=no_reason == 0 and no_raw == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"{no_reason} rows without a reason, {no_raw} without their raw record",
            metadata={
                "rows_without_reason": no_reason,
                "rows_without_raw_record": no_raw,
                "reasons_by_field_and_rule": dg.MetadataValue.json(reasons),
            },
        )

    return [conservation, quarantine_rate, duplicates, explained, *map(suite_check, suites)]
