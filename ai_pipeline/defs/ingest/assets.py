"""Raw sources -> validated and quarantined tables, for events and users.

Assets: `raw_<source>` for every landing source in `ai_pipeline.sources`, `raw_operational_events`,
`raw_api_events`, `validated_events`/`quarantined_events`, `validated_users`/`quarantined_users`.
The work is done by `ai_pipeline.lib`; these shells read the partition, call it, and report numbers.
"""

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource
from duckdb import DuckDBPyConnection
from pydantic import BaseModel

from ai_pipeline.defs.common import DAILY_BACKFILL, DUCKDB_POOL, OWNERS, DayChecks, daily_asset, partition_days
from ai_pipeline.lib import http_api, ops_db
from ai_pipeline.lib.contracts import Event, User
from ai_pipeline.lib.landing import read_landing_day
from ai_pipeline.lib.quality import Verdict
from ai_pipeline.lib.raw import SchemaReport, empty_raw
from ai_pipeline.lib.validation import validate
from ai_pipeline.settings import Settings
from ai_pipeline.sources import EVENT_SOURCES, USER_SOURCES, LandingSource

SCHEMA_CHECK = "schema_matches_contract"
PARTITION_EXPR = {"partition_expr": "partition_date"}


@dataclass(frozen=True)
class SourceRead:
    raw: pl.DataFrame
    reports: list[SchemaReport]
    issues: list[str]
    configured: bool = True


def _schema_check(per_day: DayChecks, name: str, day: date, read: SourceRead) -> dg.AssetCheckEvaluation:
    errors = [r.error for r in read.reports if r.error]
    unknown = {r.uri: r.unknown for r in read.reports if r.unknown}
    aliased = {r.uri: r.aliased for r in read.reports if r.aliased}
    verdict = Verdict(
        not errors, "ERROR", errors[0] if errors else ("ok" if read.configured else "source not configured")
    )
    return per_day.evaluation(
        day,
        verdict,
        {
            "inputs": len(read.reports),
            "inputs_with_schema_errors": len(errors),
            "schema_errors": dg.MetadataValue.json(errors),
            "aliased_columns": dg.MetadataValue.json(aliased),
            "unknown_columns": dg.MetadataValue.json(unknown),
            "input_issues": dg.MetadataValue.json(read.issues),
        },
        asset_key=name,
        check_name=SCHEMA_CHECK,
    )


def _raw_asset(
    name: str,
    *,
    description: str,
    kinds: set[str],
    partitions: dg.PartitionsDefinition,
    read: Callable[[date, datetime], SourceRead],
) -> dg.AssetsDefinition:
    @daily_asset(
        name,
        description=description,
        group_name="raw",
        kinds=kinds,
        partitions_def=partitions,
        pool=DUCKDB_POOL,
        metadata=PARTITION_EXPR,
        check_specs=[
            dg.AssetCheckSpec(
                SCHEMA_CHECK,
                asset=name,
                partitions_def=partitions,
                description="Every input has the contract's required columns and types (aliases are accepted).",
            )
        ],
    )
    def _asset(context: dg.AssetExecutionContext):
        started = time.perf_counter()
        days = partition_days(context)
        reads = [read(day, datetime.now(UTC)) for day in days]
        raw = pl.concat([r.raw for r in reads], how="vertical")
        yield dg.Output(
            raw,
            output_name=name,
            metadata={
                "dagster/row_count": raw.height,
                "days": len(days),
                "configured": reads[0].configured,
                "inputs": sum(len(r.reports) for r in reads),
                "rows_with_read_errors": raw["_read_error"].is_not_null().sum(),
                "input_issues": sum(len(r.issues) for r in reads),
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        per_day = DayChecks(context)
        for day, result in zip(days, reads, strict=True):
            yield _schema_check(per_day, name, day, result)

    return _asset


def landing_asset(source: LandingSource, settings: Settings, partitions) -> dg.AssetsDefinition:
    def read(day: date, ingested_at: datetime) -> SourceRead:
        landed = read_landing_day(
            settings.landing,
            source.folder,
            day,
            source.model,
            source=source.name,
            ingested_at=ingested_at,
            mapping=source.mapping,
        )
        return SourceRead(landed.raw, landed.reports, landed.issues)

    return _raw_asset(
        f"raw_{source.name}",
        description=f"{source.description} Read from landing/{source.folder}/<day>/.",
        kinds={"python", "polars", "duckdb"},
        partitions=partitions,
        read=read,
    )


def operational_events_asset(settings: Settings, partitions) -> dg.AssetsDefinition:
    def read(day: date, ingested_at: datetime) -> SourceRead:
        if not settings.ops_dsn:
            return SourceRead(empty_raw(Event), [], ["AI_PIPELINE_OPS_DSN is not set"], configured=False)
        raw, report = ops_db.read_events(settings.ops_dsn, settings.ops_table, day, ingested_at=ingested_at)
        return SourceRead(raw, [report], [])

    return _raw_asset(
        "raw_operational_events",
        description="User events from the operational PostgreSQL table (AI_PIPELINE_OPS_DSN), read by day window.",
        kinds={"python", "postgres", "duckdb"},
        partitions=partitions,
        read=read,
    )


def api_events_asset(settings: Settings, partitions) -> dg.AssetsDefinition:
    def read(day: date, ingested_at: datetime) -> SourceRead:
        if not settings.api_url:
            return SourceRead(empty_raw(Event), [], ["AI_PIPELINE_API_URL is not set"], configured=False)
        raw, report = http_api.fetch_events(
            settings.api_url, day, ingested_at=ingested_at, token=settings.api_token, timeout_s=settings.api_timeout_s
        )
        return SourceRead(raw, [report], [])

    return _raw_asset(
        "raw_api_events",
        description="User events from the HTTP events API (AI_PIPELINE_API_URL), paginated, with retries.",
        kinds={"python", "api", "duckdb"},
        partitions=partitions,
        read=read,
    )


def arrived_sources(
    context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext, raw_keys: Iterable[str], days: Iterable[date]
) -> dict[date, list[str]]:
    """Per day, the raw sources whose partition has been materialized. Automation validates a day as soon as any
    source delivered it; a source not in yet counts as empty, and re-validates the day when it arrives."""
    present = {raw: context.instance.get_materialized_partitions(dg.AssetKey(raw)) for raw in raw_keys}
    return {day: [raw for raw, keys in present.items() if day.isoformat() in keys] for day in days}


def read_partition(conn: DuckDBPyConnection, table: str, day: date) -> pl.DataFrame:
    """One partition of a warehouse table (written by the IO manager under schema `main`)."""
    return conn.execute(f"select * from main.{table} where partition_date = ?", [day]).pl()


def validation_assets(
    entity: str,
    model: type[BaseModel],
    raw_keys: Iterable[str],
    *,
    unique_key: str,
    partitions: dg.PartitionsDefinition,
) -> dg.AssetsDefinition:
    raw_keys = list(raw_keys)
    valid_name, quarantined_name = f"validated_{entity}", f"quarantined_{entity}"
    common = dict(
        group_name="validated",
        kinds={"python", "polars", "duckdb"},
        owners=OWNERS,
        metadata=PARTITION_EXPR,
    )

    @dg.multi_asset(
        name=f"validate_{entity}",
        outs={
            valid_name: dg.AssetOut(
                description=f"{model.__name__} rows that passed the {model.__name__} contract, typed, "
                f"one row per {unique_key}.",
                **common,
            ),
            quarantined_name: dg.AssetOut(
                description=f"{model.__name__} rows that failed the contract: the raw record, its lineage and "
                "every reason (field, rule, message, value).",
                **common,
            ),
        },
        deps=raw_keys,
        partitions_def=partitions,
        pool=DUCKDB_POOL,
        backfill_policy=DAILY_BACKFILL,
    )
    def _validate(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
        days = partition_days(context)
        arrived = arrived_sources(context, raw_keys, days)
        valid, quarantined, rows_in, duplicates, seconds, per_source = [], [], 0, 0, 0.0, Counter()
        # One connection for every source and day of the run, closed before the IO manager writes the outputs.
        with warehouse.get_connection() as conn:
            for day in days:
                frames = [read_partition(conn, key, day) for key in arrived[day]]
                raw = pl.concat(frames, how="vertical") if frames else empty_raw(model)
                started = time.perf_counter()
                result = validate(raw, model, partition_day=day, unique_key=unique_key)
                seconds += time.perf_counter() - started
                valid.append(result.valid)
                quarantined.append(result.quarantined)
                rows_in += raw.height
                duplicates += result.duplicates
                per_source.update(dict(raw.group_by("_source").len().rows()))
        valid, quarantined = pl.concat(valid, how="vertical"), pl.concat(quarantined, how="vertical")
        rate = quarantined.height / rows_in if rows_in else 0.0
        missing = {day.isoformat(): sorted(set(raw_keys) - set(keys)) for day, keys in arrived.items()}
        missing = {day: sources for day, sources in missing.items() if sources}
        yield dg.Output(
            valid,
            output_name=valid_name,
            metadata={
                "dagster/row_count": valid.height,
                "days": len(days),
                "rows_in": rows_in,
                "rows_quarantined": quarantined.height,
                "quarantine_rate": round(rate, 6),
                "duplicates": duplicates,
                "validation_seconds": round(seconds, 4),
                "rows_per_second": round(rows_in / seconds) if seconds else 0,
                "rows_in_by_source": dg.MetadataValue.json(dict(sorted(per_source.items()))),
                "sources_arrived": min(len(keys) for keys in arrived.values()),
                "sources_not_arrived": dg.MetadataValue.json(missing),
            },
        )
        yield dg.Output(
            quarantined,
            output_name=quarantined_name,
            metadata={"dagster/row_count": quarantined.height, "quarantine_rate": round(rate, 6)},
        )

    return _validate


def ingest_assets(settings: Settings, partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    event_raw = [landing_asset(s, settings, partitions) for s in EVENT_SOURCES]
    event_raw += [operational_events_asset(settings, partitions), api_events_asset(settings, partitions)]
    user_raw = [landing_asset(s, settings, partitions) for s in USER_SOURCES]
    return [
        *event_raw,
        *user_raw,
        validation_assets(
            "events", Event, [a.key.path[-1] for a in event_raw], unique_key="event_id", partitions=partitions
        ),
        validation_assets(
            "users", User, [a.key.path[-1] for a in user_raw], unique_key="user_id", partitions=partitions
        ),
    ]
