"""Asset checks on the validated tables: conservation, quarantine rate, duplicates, Great Expectations.

One subsettable multi-check per entity; each check reads its days back from the warehouse, so it can be re-run on
its own from the UI.
"""

from collections.abc import Callable, Iterable, Mapping
from datetime import date

import dagster as dg
from dagster_duckdb import DuckDBResource
from duckdb import DuckDBPyConnection

from ai_pipeline.defs.ingest.assets import read_partition, routed_sources
from ai_pipeline.defs.keys import (
    CONSERVATION_CHECK,
    DUCKDB_POOL,
    DUPLICATES_CHECK,
    ENTITY_TABLES,
    EXPLAINED_CHECK,
    QUARANTINE_RATE_CHECK,
    UNIQUE_ACROSS_DAYS_CHECK,
)
from ai_pipeline.defs.policy import partition_days
from ai_pipeline.defs.reporting import DayChecks
from ai_pipeline.lib import quality
from ai_pipeline.lib.ingest import expectations
from ai_pipeline.lib.quality import Verdict

_COUNT = "select count(*) from main.{table} where partition_date = ?"
_ROUTED = "select count(*) from main.{table} where _event_date = ?"
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
_TOP_REASONS = """
select
    r.field || ':' || r.rule as reason,
    count(*) as n,
    arg_min(_source_uri || ' line ' || _source_offset, _source_uri || lpad(_source_offset::varchar, 12, '0')) as first,
    arg_min(r.value, _source_uri || lpad(_source_offset::varchar, 12, '0')) as value
from (select unnest(reasons) as r, _source_uri, _source_offset from main.{table} where partition_date = ?)
group by all
order by n desc, reason
limit 10
"""
_DUPLICATES = """
with duplicates as (
    select list_filter(reasons, r -> r.rule = 'duplicate') as found, _source_uri, _source_offset
    from main.{table}
    where partition_date = ?
)
select
    count(*) filter (where len(list_filter(found, r -> starts_with(r.message, 'identical'))) > 0),
    count(*) filter (where len(list_filter(found, r -> starts_with(r.message, 'conflicting'))) > 0),
    min(_source_uri || ' line ' || _source_offset || ': ' || found[1].message) filter (where len(found) > 0)
from duplicates
"""

# A key of the day that another day holds too: rows land on their event's day, so a repeat there is the same id with
# another time. (`key` and `table` are the pipeline's own names, never input.)
_ACROSS_DAYS = """
select count(*), min({key} || ' also on ' || other::varchar)
from (
    select a.{key}, min(b.partition_date) as other
    from main.{table} a
    join main.{table} b on b.{key} = a.{key} and b.partition_date <> a.partition_date
    where a.partition_date = ?
    group by a.{key}
)
"""


def ingest_checks(
    entity: str,
    raw_keys: Iterable[str],
    *,
    suites: Mapping[str, str],
    partitions: dg.PartitionsDefinition,
    unique_key: str | None = None,
) -> dg.AssetChecksDefinition:
    """Checks for `validated_<entity>`, one result per check and day of the run; `suites`: Great Expectations
    suite name -> check name (each suite declares its severity); `unique_key`: a column no two days may share."""
    raw_keys = list(raw_keys)
    valid, quarantined = ENTITY_TABLES[entity]
    Evaluate = Callable[[DuckDBPyConnection, date, list[str]], tuple[Verdict, dict]]

    def counts(conn: DuckDBPyConnection, day: date, tables: list[str]) -> tuple[int, int, int]:
        rows_in = sum(conn.execute(_ROUTED.format(table=t), [day]).fetchone()[0] for t in tables)
        n_valid = conn.execute(_COUNT.format(table=valid), [day]).fetchone()[0]
        n_quarantined = conn.execute(_COUNT.format(table=quarantined), [day]).fetchone()[0]
        return rows_in, n_valid, n_quarantined

    def conservation(conn, day, tables):
        rows_in, n_valid, n_quarantined = counts(conn, day, tables)
        verdict = quality.conservation(rows_in, n_valid, n_quarantined)
        return verdict, {"rows_in": rows_in, "rows_valid": n_valid, "rows_quarantined": n_quarantined}

    def quarantine_rate(conn, day, tables):
        rows_in, _, n_quarantined = counts(conn, day, tables)
        rate = n_quarantined / rows_in if rows_in else 0.0
        top = [quality.Reason(*row) for row in conn.execute(_TOP_REASONS.format(table=quarantined), [day]).fetchall()]
        verdict = quality.quarantine_rate(rows_in, n_quarantined, reasons=top)
        return verdict, {
            "quarantine_rate": round(rate, 6),
            "rows_quarantined": n_quarantined,
            "top_reasons": dg.MetadataValue.json([r.__dict__ for r in top]),
        }

    def duplicates(conn, day, _):
        identical, conflicting, example = conn.execute(_DUPLICATES.format(table=quarantined), [day]).fetchone()
        verdict = quality.duplicates(identical, conflicting, example)
        return verdict, {"identical_duplicates": identical, "conflicting_duplicates": conflicting}

    def unique_across_days(conn, day, _):
        repeated, example = conn.execute(_ACROSS_DAYS.format(key=unique_key, table=valid), [day]).fetchone()
        return quality.unique_across_days(unique_key, repeated, example), {"repeated_keys": repeated}

    def explained(conn, day, _):
        no_reason, no_raw = conn.execute(_UNEXPLAINED.format(table=quarantined), [day]).fetchone()
        reasons = dict(conn.execute(_REASON_COUNTS.format(table=quarantined), [day]).fetchall())
        verdict = Verdict(
            no_reason == 0 and no_raw == 0,
            "ERROR",
            f"{no_reason} rows without a reason, {no_raw} without their raw record",
        )
        return verdict, {
            "rows_without_reason": no_reason,
            "rows_without_raw_record": no_raw,
            "reasons_by_field_and_rule": dg.MetadataValue.json(reasons),
        }

    def suite(name: str) -> Evaluate:
        def evaluate(conn, day, _):
            frame = read_partition(conn, valid, day)
            outcome = expectations.run_suite(name, frame)
            metadata = outcome.as_metadata()
            metadata["failures"] = dg.MetadataValue.md(metadata["failures"])
            description = f"{len(outcome.failed)} of {outcome.evaluated} expectations failed"
            if outcome.failed:
                description += ": " + "; ".join(f.describe() for f in outcome.failed[: quality.SHOWN])
            return Verdict(outcome.success, outcome.severity, description), metadata

        return evaluate

    def spec(name: str, description: str, *, asset: str = valid, blocking: bool = False, deps=()) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(
            name,
            asset=asset,
            description=description,
            blocking=blocking,
            partitions_def=partitions,
            additional_deps=list(deps),
        )

    checks: list[tuple[dg.AssetCheckSpec, Evaluate]] = [
        (
            spec(
                CONSERVATION_CHECK,
                f"Nothing is lost: the raw rows of the day (from every arrival day) = {valid} + {quarantined}.",
                blocking=True,
                deps=[quarantined, *raw_keys],
            ),
            conservation,
        ),
        (
            spec(
                QUARANTINE_RATE_CHECK,
                f"WARN above {quality.QUARANTINE_WARN_RATE:.0%} quarantined rows, ERROR (blocking) above "
                f"{quality.QUARANTINE_ERROR_RATE:.0%} of at least {quality.QUARANTINE_MIN_ROWS} rows; a failure names "
                "the most frequent reasons and where each first occurred.",
                blocking=True,
                deps=[quarantined],
            ),
            quarantine_rate,
        ),
        (
            spec(
                DUPLICATES_CHECK,
                "Duplicate keys within the partition and across sources: the first by lineage is kept, the others "
                "are quarantined and counted here.",
                deps=[quarantined],
            ),
            duplicates,
        ),
        *(
            [
                (
                    spec(
                        UNIQUE_ACROSS_DAYS_CHECK,
                        f"No `{unique_key}` of the day is on another day too (within the day, duplicates are "
                        "resolved at validation).",
                    ),
                    unique_across_days,
                )
            ]
            if unique_key
            else []
        ),
        (
            spec(
                EXPLAINED_CHECK,
                "Every quarantined row says why (at least one reason) and keeps its raw record; the metadata counts "
                "reasons by field and rule.",
                asset=quarantined,
            ),
            explained,
        ),
        *(
            (
                spec(
                    check_name,
                    f"Great Expectations suite `{name}` on the partition ({expectations.SEVERITY[name]}"
                    f"{', blocking' if expectations.SEVERITY[name] == expectations.ERROR else ''}).",
                    blocking=expectations.SEVERITY[name] == expectations.ERROR,
                ),
                suite(name),
            )
            for name, check_name in suites.items()
        ),
    ]

    # The warehouse's pool: DuckDB lets no other process open the file while a writer holds it.
    @dg.multi_asset_check(name=f"{valid}_checks", specs=[spec for spec, _ in checks], can_subset=True, pool=DUCKDB_POOL)
    def _checks(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource):
        days = partition_days(context)
        per_day = DayChecks(context)
        selected = [(s, evaluate) for s, evaluate in checks if s.key in context.selected_asset_check_keys]
        with warehouse.get_connection() as conn:
            tables = routed_sources(conn, raw_keys)
            for day in days:
                for check, evaluate in selected:
                    verdict, metadata = evaluate(conn, day, tables)
                    yield from per_day.results(
                        day, verdict, metadata, asset_key=check.asset_key.path[-1], check_name=check.name
                    )

    return _checks
