"""Raw sources -> validated and quarantined tables, one pair per contract (`VALIDATED`).

Assets: `raw_<source>` for every landing source in `ai_pipeline.sources`, `raw_operational_events`,
`raw_api_events`, `raw_feedback`, `validated_<entity>`/`quarantined_<entity>` for events, users, chat messages,
transcript pairs and feedback.
The work is done by `ai_pipeline.lib`; these shells read the partition, call it, and report numbers.
"""

import inspect
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource
from duckdb import DuckDBPyConnection
from pydantic import BaseModel

from ai_pipeline.defs.keys import (
    DAILY_JOB,
    DUCKDB_POOL,
    ENTITY_TABLES,
    FILES_CHECK,
    RAW_API_EVENTS,
    RAW_FEEDBACK,
    RAW_GROUP,
    RAW_OPERATIONAL_EVENTS,
    SCHEMA_CHECK,
    TRAINING_JOB,
    VALIDATED_GROUP,
    raw_key,
)
from ai_pipeline.defs.ops.freshness import cadence_policy
from ai_pipeline.defs.policy import DAILY_BACKFILL, OWNERS, daily_asset, partition_days
from ai_pipeline.defs.reporting import DayChecks
from ai_pipeline.defs.resources import (
    EVENTS_API,
    FEEDBACK,
    LANDING,
    OPS_DB,
    WAREHOUSE,
    EventsApi,
    FeedbackStore,
    LandingZone,
    OperationalDatabase,
)
from ai_pipeline.lib import quality
from ai_pipeline.lib.ingest.contracts import Event, User
from ai_pipeline.lib.ingest.landing import FileReport, day_fingerprint, read_landing_day
from ai_pipeline.lib.ingest.raw import SchemaReport, empty_raw
from ai_pipeline.lib.ingest.routing import Routing, days_touched, route
from ai_pipeline.lib.ingest.validation import validate
from ai_pipeline.lib.llm import feedback
from ai_pipeline.lib.llm.contracts import ChatMessage, Feedback, TranscriptPair
from ai_pipeline.lib.quality import Verdict
from ai_pipeline.settings import Settings
from ai_pipeline.sources import SourceDeclaration

CONTRACT_TAG = "ai_pipeline/contract"  # on raw assets: the contract their rows are validated against
# Raw materialization metadata: the validated days (other than the run's own) whose input the run changed.
ROUTED_DAYS = "routed_days"
# A landing source's materialization: the fingerprint of each day's files as read (`landing.day_fingerprint`), by
# which its sensor knows a day already read in that state (by a run from the CLI, a backfill, or before a restart).
LANDING_STATES = "landing_states"


@dataclass(frozen=True)
class Validated:
    """A contract's validated entity (`keys.ENTITY_TABLES`): the key no two valid rows of a day share, if any,
    whether it may not repeat across days either (an event happens once; a user's profile lands again), and the
    daily job of its lane (the events lane's, or the training-data lane's)."""

    model: type[BaseModel]
    entity: str
    key: str | None
    once: bool = False
    job: str = DAILY_JOB


VALIDATED = (
    Validated(Event, "events", "event_id", once=True),
    Validated(User, "users", "user_id"),
    Validated(ChatMessage, "chat_messages", "message_id", once=True, job=TRAINING_JOB),
    Validated(TranscriptPair, "transcript_pairs", None, job=TRAINING_JOB),
    Validated(Feedback, "feedback", "feedback_id", once=True, job=TRAINING_JOB),
)


def contract_job(model: type[BaseModel]) -> str:
    """The daily job that carries the rows of a contract from raw to their lane's end."""
    return next(v.job for v in VALIDATED if v.model is model)


PARTITION_EXPR = {"partition_expr": "partition_date"}


@dataclass(frozen=True)
class SourceRead:
    raw: pl.DataFrame
    reports: list[SchemaReport]
    issues: list[str]
    configured: bool = True
    files: list[FileReport] | None = None  # landing sources: every file of the day, read or refused
    ignored: list[str] = field(default_factory=list)
    state: str | None = None  # landing sources: the day's files' fingerprint when read


def _schema_check(
    per_day: DayChecks, name: str, day: date, read: SourceRead
) -> Iterator[dg.Output | dg.AssetCheckEvaluation]:
    errors = [r.error for r in read.reports if r.error]
    unknown = {r.uri: r.unknown for r in read.reports if r.unknown}
    aliased = {r.uri: r.aliased for r in read.reports if r.aliased}
    verdict = Verdict(
        not errors, "ERROR", errors[0] if errors else ("ok" if read.configured else "source not configured")
    )
    yield from per_day.results(
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


def _files_check(
    per_day: DayChecks, name: str, day: date, read: SourceRead
) -> Iterator[dg.Output | dg.AssetCheckEvaluation]:
    files = read.files or []
    rows_by_uri = dict(read.raw.group_by("_source_uri").len().rows()) if read.raw.height else {}
    verdict = quality.files_accounted(files, rows_by_uri)
    readable = [f for f in files if f.status == "read"]
    yield from per_day.results(
        day,
        verdict,
        {
            "files": len(files),
            "files_refused": len(files) - len(readable),
            "lines_counted": sum(f.lines or 0 for f in readable),
            "data_lines": sum(f.data_lines for f in readable),
            "rows": read.raw.height,
            "multiline_records": sum(len(f.multiline) for f in readable),
            "resynchronized_lines": sum(len(f.resynced) for f in readable),
            "refused": dg.MetadataValue.json([{"file": f.uri, "reason": f.reason} for f in files if f not in readable]),
            "per_file": dg.MetadataValue.json([f.as_dict() for f in files]),
            "ignored": dg.MetadataValue.json(read.ignored),
            "notes": dg.MetadataValue.json(read.issues),
        },
        asset_key=name,
        check_name=FILES_CHECK,
    )


def _previous_days(conn: DuckDBPyConnection, table: str, days: list[date]) -> set[date]:
    """The validated days the rows now stored for `days` (arrival days) were routed to."""
    if not routed_sources(conn, [table]):
        return set()
    found = conn.execute(
        f"select distinct _event_date from main.{table} where partition_date in (select unnest(?::date[]))", [days]
    ).fetchall()
    return {row[0] for row in found}


def _raw_asset(
    name: str,
    *,
    description: str,
    kinds: set[str],
    partitions: dg.PartitionsDefinition,
    model: type[BaseModel],
    routing: Routing,
    resource: str,
    read: Callable[[Any, date, datetime], SourceRead],
    landing: bool = False,
    freshness_policy: dg.FreshnessPolicy | None = None,
    declaration: Path | None = None,
) -> dg.AssetsDefinition:
    """The UI links the asset to `read` (what is particular to the source), or to the YAML `declaration` of a
    landing source, besides this function."""
    if declaration:
        particular = dg.LocalFileCodeReference(file_path=str(declaration), line_number=1, label="declaration")
    else:
        line = inspect.getsourcelines(read)[1]
        particular = dg.LocalFileCodeReference(file_path=inspect.getsourcefile(read), line_number=line, label="reader")
    specs = [
        dg.AssetCheckSpec(
            SCHEMA_CHECK,
            asset=name,
            partitions_def=partitions,
            description="Every input has the contract's required columns and types (aliases are accepted), and no "
            "column name twice.",
        )
    ]
    if landing:
        specs.append(
            dg.AssetCheckSpec(
                FILES_CHECK,
                asset=name,
                partitions_def=partitions,
                blocking=True,
                description="Every file of the day folder was read (none refused: unsupported, outside the root, "
                "undecodable, over the size limit, still being written) and each one's rows add up to its record "
                "count, counted independently of the parser (lines, or the Parquet footer).",
            )
        )

    @daily_asset(
        name,
        description=description,
        group_name=RAW_GROUP,
        kinds=kinds,
        partitions_def=partitions,
        pool=DUCKDB_POOL,
        metadata={
            **PARTITION_EXPR,
            "dagster/code_references": dg.CodeReferencesMetadataValue(code_references=[particular]),
        },
        check_specs=specs,
        freshness_policy=freshness_policy,
        tags={CONTRACT_TAG: model.__name__},
        required_resource_keys={WAREHOUSE, resource},
    )
    def raw_source(context: dg.AssetExecutionContext):
        """`read` gets the source's resource (`resource`: its key)."""
        warehouse, system = context.resources.warehouse, getattr(context.resources, resource)
        started = time.perf_counter()
        days = partition_days(context)
        reads = []
        for day in days:
            ingested_at = datetime.now(UTC)
            result = read(system, day, ingested_at)
            routed = route(result.raw, model, ingested_at=ingested_at, routing=routing)
            reads.append(replace(result, raw=routed))
        raw = pl.concat([r.raw for r in reads], how="vertical")
        with warehouse.get_connection() as conn:
            before = _previous_days(conn, name, days)
        states = {day.isoformat(): result.state for day, result in zip(days, reads, strict=True)}
        landing_states = {LANDING_STATES: dg.MetadataValue.json(states)} if landing else {}
        by_day = days_touched(raw)
        # Validated days whose input this run changes (besides the run's own): the `late_rows` sensor re-runs them.
        touched = (set(by_day) | before) - set(days)
        yield dg.Output(
            raw,
            output_name=name,
            metadata={
                "dagster/row_count": raw.height,
                "days": len(days),
                "configured": reads[0].configured,
                "inputs": sum(len(r.reports) for r in reads),
                "rows_with_read_errors": raw["_read_error"].is_not_null().sum(),
                "rows_routed_to_other_days": raw.filter(pl.col("_event_date") != pl.col("partition_date")).height,
                "rows_too_late": raw.filter(pl.col("_routing") == "too_late").height,
                ROUTED_DAYS: dg.MetadataValue.json(sorted(d.isoformat() for d in touched)),
                "rows_by_event_day": dg.MetadataValue.json({d.isoformat(): n for d, n in by_day.items()}),
                "input_issues": sum(len(r.issues) for r in reads),
                **landing_states,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        per_day = DayChecks(context)
        for day, result in zip(days, reads, strict=True):
            yield from _schema_check(per_day, name, day, result)
            if landing:
                yield from _files_check(per_day, name, day, result)

    return raw_source


def landing_asset(source: SourceDeclaration, settings: Settings, partitions) -> dg.AssetsDefinition:
    # Compiled once (a declaration's SQL is parsed when its mapping is built), not for every day read.
    mapping = source.mapping

    def read(zone: LandingZone, day: date, ingested_at: datetime) -> SourceRead:
        state = day_fingerprint(zone.path, source.folder, day)  # before reading: a later change is a new state
        landed = read_landing_day(
            zone.path,
            source.folder,
            day,
            source.contract_model,
            source=source.name,
            ingested_at=ingested_at,
            mapping=mapping,
            options=replace(source.read_options, max_bytes=zone.max_file_bytes),
            settle_seconds=zone.settle_s,
        )
        return SourceRead(
            landed.raw, landed.reports, landed.notes, files=landed.files, ignored=landed.ignored, state=state
        )

    return _raw_asset(
        raw_key(source.name),
        description=f"{source.description} Read from landing/{source.folder}/<day>/, partitioned by arrival day.",
        kinds={"python", "polars", "duckdb"},
        partitions=partitions,
        model=source.contract_model,
        routing=Routing(source.lateness_days, settings.start_date),
        resource=LANDING,
        read=read,
        landing=True,
        freshness_policy=cadence_policy(source.cadence_days),
        declaration=source.declaration,
    )


def operational_events_asset(settings: Settings, partitions) -> dg.AssetsDefinition:
    def read(database: OperationalDatabase, day: date, ingested_at: datetime) -> SourceRead:
        if not database.dsn:
            return SourceRead(empty_raw(Event), [], ["AI_PIPELINE_OPS_DSN is not set"], configured=False)
        raw, report = database.read_events(day, ingested_at=ingested_at)
        return SourceRead(raw, [report], [])

    return _raw_asset(
        RAW_OPERATIONAL_EVENTS,
        description="User events from the operational PostgreSQL table (AI_PIPELINE_OPS_DSN), read by day window.",
        kinds={"python", "postgres", "duckdb"},
        partitions=partitions,
        model=Event,
        routing=Routing(first_day=settings.start_date),
        resource=OPS_DB,
        read=read,
    )


def api_events_asset(settings: Settings, partitions) -> dg.AssetsDefinition:
    def read(api: EventsApi, day: date, ingested_at: datetime) -> SourceRead:
        if not api.url:
            return SourceRead(empty_raw(Event), [], ["AI_PIPELINE_API_URL is not set"], configured=False)
        raw, report = api.fetch_events(day, ingested_at=ingested_at)
        return SourceRead(raw, [report], [])

    return _raw_asset(
        RAW_API_EVENTS,
        description="User events from the HTTP events API (AI_PIPELINE_API_URL), paginated, with retries.",
        kinds={"python", "api", "duckdb"},
        partitions=partitions,
        model=Event,
        routing=Routing(first_day=settings.start_date),
        resource=EVENTS_API,
        read=read,
    )


def feedback_asset(settings: Settings, partitions) -> dg.AssetsDefinition:
    def read(store: FeedbackStore, day: date, ingested_at: datetime) -> SourceRead:
        raw, report = feedback.read_raw(store.store(), day, ingested_at=ingested_at)
        return SourceRead(raw, [report], [])

    return _raw_asset(
        RAW_FEEDBACK,
        description="Ratings of chat replies received by the feedback service (`ai-pipeline feedback-server`), by "
        "the day they were given; from its PostgreSQL table (AI_PIPELINE_FEEDBACK_DSN) or its embedded SQLite file.",
        kinds={"python", "api", "duckdb"},
        partitions=partitions,
        model=Feedback,
        routing=Routing(first_day=settings.start_date),
        resource=FEEDBACK,
        read=read,
    )


def routed_sources(conn: DuckDBPyConnection, raw_keys: Iterable[str]) -> list[str]:
    """The raw tables that exist (a source's table is created on its first materialization)."""
    keys = list(raw_keys)
    found = conn.execute(
        "select table_name from information_schema.tables where table_schema = 'main' "
        "and table_name in (select unnest(?::varchar[]))",
        [keys],
    ).fetchall()
    present = {row[0] for row in found}
    return [key for key in keys if key in present]


def read_routed(conn: DuckDBPyConnection, table: str, day: date) -> pl.DataFrame:
    """The raw rows of `table` validated in `day`, from whichever arrival day they came (`lib.routing`)."""
    return conn.execute(
        f"select * from main.{table} where _event_date = ? order by partition_date, _source_uri, _source_offset", [day]
    ).pl()


def read_partition(conn: DuckDBPyConnection, table: str, day: date) -> pl.DataFrame:
    """One partition of a warehouse table (written by the IO manager under schema `main`)."""
    return conn.execute(f"select * from main.{table} where partition_date = ?", [day]).pl()


def validation_assets(
    entity: str,
    model: type[BaseModel],
    raw_keys: Iterable[str],
    *,
    unique_key: str | None,
    partitions: dg.PartitionsDefinition,
) -> dg.AssetsDefinition:
    raw_keys = list(raw_keys)
    one_row = f", one row per {unique_key}" if unique_key else ""
    valid_name, quarantined_name = ENTITY_TABLES[entity]
    common = dict(
        group_name=VALIDATED_GROUP,
        kinds={"python", "polars", "duckdb"},
        owners=OWNERS,
        metadata=PARTITION_EXPR,
    )

    @dg.multi_asset(
        name=f"validate_{entity}",
        outs={
            valid_name: dg.AssetOut(
                description=f"{model.__name__} rows that passed the {model.__name__} contract, typed{one_row}, "
                "in the partition of their own day whatever day they arrived on.",
                **common,
            ),
            quarantined_name: dg.AssetOut(
                description=f"{model.__name__} rows that failed the contract: the raw record, its lineage and "
                "every reason (field, rule, message, value); rows too late for their day, in their arrival day.",
                **common,
            ),
        },
        deps=raw_keys,
        partitions_def=partitions,
        pool=DUCKDB_POOL,
        backfill_policy=DAILY_BACKFILL,
    )
    def validate_entity(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
        days = partition_days(context)
        valid, quarantined, rows_in, duplicates, seconds = [], [], 0, 0, 0.0
        per_source, late = Counter(), 0
        # One connection for every source and day of the run, closed before the IO manager writes the outputs.
        with warehouse.get_connection() as conn:
            tables = routed_sources(conn, raw_keys)
            for day in days:
                frames = [read_routed(conn, key, day) for key in tables]
                raw = pl.concat(frames, how="vertical") if frames else empty_raw(model)
                raw = raw.with_columns(pl.lit(day).alias("partition_date"))
                started = time.perf_counter()
                result = validate(raw, model, partition_day=day, unique_key=unique_key)
                seconds += time.perf_counter() - started
                valid.append(result.valid)
                quarantined.append(result.quarantined)
                rows_in += raw.height
                duplicates += result.duplicates
                late += raw.filter(pl.col("_arrival_date") > day).height
                per_source.update(dict(raw.group_by("_source").len().rows()))
        valid, quarantined = pl.concat(valid, how="vertical"), pl.concat(quarantined, how="vertical")
        rate = quarantined.height / rows_in if rows_in else 0.0
        yield dg.Output(
            valid,
            output_name=valid_name,
            metadata={
                "dagster/row_count": valid.height,
                "days": len(days),
                "rows_in": rows_in,
                "rows_quarantined": quarantined.height,
                "rows_arrived_later": late,
                "quarantine_rate": round(rate, 6),
                "duplicates": duplicates,
                "validation_seconds": round(seconds, 4),
                "rows_per_second": round(rows_in / seconds) if seconds else 0,
                "rows_in_by_source": dg.MetadataValue.json(dict(sorted(per_source.items()))),
                "sources_with_tables": len(tables),
            },
        )
        yield dg.Output(
            quarantined,
            output_name=quarantined_name,
            metadata={"dagster/row_count": quarantined.height, "quarantine_rate": round(rate, 6)},
        )

    return validate_entity


def raw_keys(assets: Iterable[dg.AssetsDefinition], model: type[BaseModel]) -> list[str]:
    """The raw assets whose rows are validated against `model` (their contract tag)."""
    return [
        spec.key.path[-1]
        for asset in assets
        for spec in asset.specs
        if spec.group_name == RAW_GROUP and spec.tags.get(CONTRACT_TAG) == model.__name__
    ]


def lane_assets(assets: Iterable[dg.AssetsDefinition], job: str) -> dg.AssetSelection:
    """The raw, validated and quarantined assets of the contracts whose lane `job` runs."""
    lane = [v for v in VALIDATED if v.job == job]
    return dg.AssetSelection.assets(*(k for v in lane for k in (*raw_keys(assets, v.model), *ENTITY_TABLES[v.entity])))


def ingest_assets(
    settings: Settings, partitions: dg.PartitionsDefinition, sources: Iterable[SourceDeclaration]
) -> list[dg.AssetsDefinition]:
    """A raw asset per declared landing source, the operational table and the API; validation per contract."""
    raw = [landing_asset(s, settings, partitions) for s in sources]
    raw += [
        operational_events_asset(settings, partitions),
        api_events_asset(settings, partitions),
        feedback_asset(settings, partitions),
    ]
    return [
        *raw,
        *(
            validation_assets(v.entity, v.model, raw_keys(raw, v.model), unique_key=v.key, partitions=partitions)
            for v in VALIDATED
        ),
    ]
