"""Sensors that pull raw data in, all running by default.

- `<source>_files`, one per landing source: a new, changed or removed file under `landing/<folder>/<day>/`
  requests that day's `raw_<source>` partition, once per state of the day's files.
- `operational_events_rows`: rows beyond a watermark (the largest primary key seen) of the operational table
  request the days their event times fall on.
- `late_rows`: raw rows that belong to a day already validated re-run that day and every later one.

Only raw partitions (and late rows' range runs) are requested: declarative automation (`ops/automation.py`) carries
them downstream. Days that are not partitions (before the start of history, or not ended yet in UTC) are reported in
the tick's log and skip reason, never dropped silently.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import dagster as dg

from ai_pipeline.defs.ingest.assets import LANDING_STATES, ROUTED_DAYS
from ai_pipeline.defs.keys import (
    LATE_ROWS_SENSOR,
    OPERATIONAL_SENSOR,
    RAW_GROUP,
    RAW_OPERATIONAL_EVENTS,
    VALIDATED_GROUP,
    landing_sensor,
    raw_key,
)
from ai_pipeline.defs.policy import lane_tags
from ai_pipeline.defs.resources import LandingZone, OperationalDatabase
from ai_pipeline.event_log import latest_materialization
from ai_pipeline.lib.ingest import landing
from ai_pipeline.sources import SourceDeclaration

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


MAX_NOTES_IN_SKIP_REASON = 20


IN_RANGE, BEFORE_START, NOT_YET = "partition", "before_start", "not_yet"


def day_status(partitions: dg.TimeWindowPartitionsDefinition, day: date, today: date) -> tuple[str, str]:
    """Whether `day` is a daily partition now; if not, why, in words for the operator."""
    if partitions.has_partition_key(day.isoformat()):
        return IN_RANGE, ""
    start = partitions.start.date()
    if day < start:
        return BEFORE_START, (
            f"before the first partition {start}: never read (move the data, or set AI_PIPELINE_START_DATE earlier)"
        )
    if day == today:
        return NOT_YET, "today is not a partition until it ends (UTC): requested then"
    return NOT_YET, "a day in the future: requested once it has ended (UTC)"


def _skip_reason(notes: list[str], quiet: str) -> str:
    shown = notes[:MAX_NOTES_IN_SKIP_REASON]
    more = f"; and {len(notes) - len(shown)} more (see the tick's log)" if len(notes) > len(shown) else ""
    return "; ".join(shown) + more if notes else quiet


def landing_files_sensor(
    source: SourceDeclaration, partitions: dg.TimeWindowPartitionsDefinition, zone: LandingZone, interval_s: int
) -> dg.SensorDefinition:
    """One run per state of a day's files: the cursor holds each requested day's fingerprint (paths, sizes and
    modification times, no content read), and the run key carries it, so a repeated tick requests nothing. A day
    the cursor does not know yet is not requested when the asset's last materialization of it read the same state
    (`LANDING_STATES`): a sensor started over days that `ai-pipeline run` or a backfill already read re-reads none.
    A day with a file modified less than the settle interval ago waits (the tick says for which files) until its
    files stop changing, or the day folder holds the completion marker.

    A day whose files were all removed is reported and not re-run: a re-read of nothing would erase the day's raw
    rows (an archiving job that moves landed files away must not do that). Run the partition by hand to clear it.
    """
    asset = raw_key(source.name)

    @dg.sensor(
        name=landing_sensor(source.name),
        target=[asset],
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"A new or changed file under landing/{source.folder}/<YYYY-MM-DD>/ requests that day's "
        f"{asset} partition, once per state of the day's files.",
        metadata={"landing_folder": str(zone.path / source.folder)},
    )
    def landing_files(context: dg.SensorEvaluationContext, landing_zone: LandingZone) -> dg.SensorResult:
        known: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        scan = landing.scan_landing(landing_zone.path, source.folder, settle_seconds=landing_zone.settle_s)
        today = datetime.now(UTC).date()
        requests, cursor, notes, read_before = [], {}, list(scan.issues), 0
        for day, files in scan.waiting.items():
            if day.isoformat() in known:
                cursor[day.isoformat()] = known[day.isoformat()]  # keep the day's last requested state meanwhile
            notes.append(
                f"{source.folder}/{day}: waiting for {len(files)} file(s) still being written to stay unchanged for "
                f"{landing_zone.settle_s:g} s (or a {landing.COMPLETION_MARKER} marker): {', '.join(files)}"
            )
        for day, state in scan.fingerprints.items():
            key = day.isoformat()
            status, why = day_status(partitions, day, today)
            if status != IN_RANGE:
                notes.append(f"{source.folder}/{key} ({scan.files[day]} files): {why}")
                continue
            cursor[key] = state
            if known.get(key) == state:
                continue
            if key not in known and _last_read_state(context.instance, asset, key) == state:
                read_before += 1  # read in this state by a run this sensor did not request
                continue
            context.log.info(f"{source.folder}/{key}: {scan.files[day]} files in state {state}, requesting {key}")
            requests.append(dg.RunRequest(partition_key=key, run_key=f"{source.name}:{key}:{state}"))
        for key in sorted(set(known) - {d.isoformat() for d in [*scan.fingerprints, *scan.waiting]}):
            notes.append(
                f"{source.folder}/{key}: no files left; not re-run (a re-run would erase the day's raw rows), "
                "run the partition by hand if that is intended"
            )
        for note in notes:
            context.log.warning(note)
        if read_before:
            context.log.info(f"{read_before} day(s) of landing/{source.folder} already read in their present state")
        return dg.SensorResult(
            run_requests=requests,
            cursor=json.dumps(cursor, sort_keys=True),
            skip_reason=None
            if requests
            else _skip_reason(notes, f"no new or changed files in landing/{source.folder} ({len(cursor)} days)"),
        )

    return landing_files


def _last_read_state(instance: dg.DagsterInstance, asset: str, day: str) -> str | None:
    """The fingerprint of the day's files that the asset's latest materialization of the day read."""
    record = latest_materialization(instance, asset, day)
    value = record.asset_materialization.metadata.get(LANDING_STATES) if record else None
    return value.value.get(day) if value is not None else None


def operational_rows_sensor(
    partitions: dg.TimeWindowPartitionsDefinition, database: OperationalDatabase, interval_s: int
) -> dg.SensorDefinition:
    """Rows beyond the watermark request the days they fall on; days not yet partitions wait in the cursor.

    Cursor: `{"watermark": largest primary key seen, "pending": [days]}`. With no cursor every row is new, so the
    first tick requests every day the table has (run keys make repeats harmless).
    """
    asset = RAW_OPERATIONAL_EVENTS

    @dg.sensor(
        name=OPERATIONAL_SENSOR,
        target=[asset],
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"New rows in the operational table (beyond the largest primary key seen) request the {asset} "
        "partitions of the days they fall on.",
        metadata={
            "configured": bool(database.dsn),
            "table": database.table if database.dsn else "AI_PIPELINE_OPS_DSN is not set: nothing to watch",
        },
    )
    def operational_rows(
        context: dg.SensorEvaluationContext, ops_database: OperationalDatabase
    ) -> dg.SensorResult | dg.SkipReason:
        if not ops_database.dsn:
            return dg.SkipReason("AI_PIPELINE_OPS_DSN is not set: the operational source is not configured")
        state = json.loads(context.cursor) if context.cursor else {"watermark": None, "pending": []}
        new = ops_database.rows_after(state["watermark"])
        if new.rows:
            context.log.info(
                f"{new.rows} rows beyond watermark {state['watermark']} (now {new.watermark}) on days "
                f"{[d.isoformat() for d in new.days]}"
            )
        today = datetime.now(UTC).date()
        requests, pending, notes = [], [], []
        for day in sorted(set(new.days) | {date.fromisoformat(d) for d in state["pending"]}):
            key = day.isoformat()
            status, why = day_status(partitions, day, today)
            if status == IN_RANGE:
                requests.append(dg.RunRequest(partition_key=key, run_key=f"operational_events:{key}:{new.watermark}"))
                continue
            if status == NOT_YET:
                pending.append(key)
            notes.append(f"rows for {key}: {why}")
        for note in notes:
            context.log.warning(note)
        return dg.SensorResult(
            run_requests=requests,
            cursor=json.dumps({"watermark": new.watermark, "pending": pending}),
            skip_reason=None
            if requests
            else _skip_reason(notes, f"no rows beyond watermark {new.watermark} in {ops_database.table}"),
        )

    return operational_rows


def late_rows_sensor(
    jobs: list[dg.UnresolvedAssetJobDefinition], partitions: dg.TimeWindowPartitionsDefinition, interval_s: int
) -> dg.SensorDefinition:
    """Rows that arrived after their day was validated re-validate it, and everything below it, without a click.

    Each raw materialization names the validated days (other than its own) whose input it changed (`routed_days`:
    late rows, rows of a bulk export, rows a rewritten file no longer holds). For every batch of such
    materializations, one range run of the daily job of the raw asset's lane (`jobs`: the events lane's, the
    training-data lane's) below the raw group goes from the earliest touched day to the newest day the lane
    validated so far: the states downstream (features, datasets deduplicated against earlier days) are cumulative,
    so every later day changes too. Days that are not partitions yet (today) are left to their own run. A lane waits
    while a run of its assets is in flight. Cursor: the storage id of the newest raw materialization seen; the first
    tick starts from the present.
    """
    raw = dg.AssetSelection.groups(RAW_GROUP)

    @dg.sensor(
        name=LATE_ROWS_SENSOR,
        jobs=jobs,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Raw rows that belong to a day already validated (late rows, bulk exports) re-run that day's "
        "lane below the raw tables (validation, marts and features; or validation and the training datasets), and "
        "every later day's, as one range run.",
    )
    def late_rows(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        graph = context.repository_def.asset_graph
        records = []
        after = int(context.cursor) if context.cursor else None
        raw_assets = raw.resolve(graph)
        for key in sorted(raw_assets):
            filters = dg.AssetRecordsFilter(asset_key=key, after_storage_id=after)
            # The first tick only needs the newest record of each raw asset, to start from the present.
            records.extend(context.instance.fetch_materializations(filters, limit=1 if after is None else 1000).records)
        if not records:
            return dg.SensorResult(cursor=context.cursor, skip_reason="no new raw materializations")
        newest_seen = str(max(r.storage_id for r in records))
        if after is None:
            return dg.SensorResult(cursor=newest_seen, skip_reason="started: watching raw materializations from now")
        touched: dict[str, set[str]] = {}
        lanes = {job.name: job.selection.resolve(graph) for job in jobs}
        for record in records:
            value = record.asset_materialization.metadata.get(ROUTED_DAYS)
            if value is not None and value.value:
                job = next(j for j in jobs if record.asset_key in lanes[j.name])
                # The arrival day is re-validated too: automation looks after the newest day only, and a bulk
                # export dropped in an old day's folder arrives on that old day.
                touched.setdefault(job.name, set()).update([*value.value, record.partition_key])
        requests, waiting = [], []
        for job in jobs:
            days = sorted(d for d in touched.get(job.name, ()) if partitions.has_partition_key(d))
            if not days:
                continue
            selection = sorted(lanes[job.name] - raw_assets)
            busy = [
                run.run_id
                for run in context.instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT))
                if set(run.asset_selection or ()) & set(selection)
            ]
            if busy:
                # A run of the same assets (automation's run of the arrival day, say) interleaved step by step with
                # the range run would compute a day from a state the range run has not brought up to date yet.
                # The materializations are read again next tick (the cursor stays; run keys drop repeats).
                waiting.append(f"late rows for {', '.join(days)}: waiting for run(s) {', '.join(busy)} of {job.name}")
                continue
            validated = lanes[job.name] & dg.AssetSelection.groups(VALIDATED_GROUP).resolve(graph)
            done = {d for key in validated for d in context.instance.get_materialized_partitions(key)}
            end = max([days[-1], *[d for d in done if partitions.has_partition_key(d)]])
            context.log.info(f"late rows for {', '.join(days)}: re-running {job.name} {days[0]}..{end}")
            requests.append(
                dg.RunRequest(
                    run_key=f"{LATE_ROWS_SENSOR}:{job.name}:{days[0]}:{end}:{newest_seen}",
                    job_name=job.name,
                    asset_selection=selection,
                    tags={
                        "dagster/asset_partition_range_start": days[0],
                        "dagster/asset_partition_range_end": end,
                        **lane_tags(job.name),
                    },
                )
            )
        for note in waiting:
            context.log.info(note)
        cursor = context.cursor if waiting else newest_seen
        if requests:
            return dg.SensorResult(run_requests=requests, cursor=cursor)
        skip = "; ".join(waiting) or f"{len(records)} raw materializations, no late rows"
        return dg.SensorResult(cursor=cursor, skip_reason=skip)

    return late_rows
