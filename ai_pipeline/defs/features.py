"""User features: validated events -> daily partials -> 7/30/90-day windows (offline store) -> online store.

Assets: `user_daily_aggregates`, `user_window_features`, `online_user_features`. The work is done by
`ai_pipeline.lib.feature_store`: `features` (registry and windows), `feature_checks`, `drift` and `online_store`; these
shells read the warehouse, call them, and report numbers and checks.
"""

import time
from datetime import date, timedelta

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from ai_pipeline.defs.keys import (
    COMPLETENESS_CHECK,
    CONSISTENCY_CHECK,
    DRIFT_CHECK,
    DUCKDB_POOL,
    FEATURES_GROUP,
    NULLS_CHECK,
    ONLINE_USER_FEATURES,
    PARTIALS_CHECK,
    RANGES_CHECK,
    ROWS_CHECK,
    STATE_CHECK,
    USER_DAILY_AGGREGATES,
    USER_FEATURE_STATE,
    USER_WINDOW_FEATURES,
    VALIDATED_EVENTS,
)
from ai_pipeline.defs.policy import DAILY_BACKFILL, OWNERS, daily_asset, partition_days
from ai_pipeline.defs.reporting import DayChecks
from ai_pipeline.defs.resources import OnlineStore, query, table_exists
from ai_pipeline.lib.feature_store import drift, feature_checks, features
from ai_pipeline.lib.quality import Verdict
from ai_pipeline.settings import Settings

# Drift compares a day with the same weekday four weeks earlier: far enough for the 7- and 30-day windows
# not to overlap, near enough to follow slow seasonal change.
DRIFT_REFERENCE_LAG_DAYS = 28


class WindowConfig(dg.Config):
    drift_reference_lag_days: int = DRIFT_REFERENCE_LAG_DAYS


def _warehouse_writer(partitions: dg.DailyPartitionsDefinition) -> dict:
    """What the DuckDB-writing feature assets declare alike."""
    return dict(
        group_name=FEATURES_GROUP, kinds={"python", "polars", "duckdb"}, partitions_def=partitions, pool=DUCKDB_POOL
    )


def _specs(asset: str, partitions, checks: dict[str, str], blocking: set[str]) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(name, asset=asset, partitions_def=partitions, description=text, blocking=name in blocking)
        for name, text in checks.items()
    ]


def _read_partition(warehouse: DuckDBResource, table: str, column: str, day: date) -> pl.DataFrame:
    """One day of a table this lane writes; empty (no columns) before its first materialization."""
    if not table_exists(warehouse, table):
        return pl.DataFrame()
    return query(warehouse, f"select * from main.{table} where {column} = ?", [day])


def aggregates_asset(partitions: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    @daily_asset(
        USER_DAILY_AGGREGATES,
        description="Per user and day: every partial aggregate the feature registry needs (counts, sums, "
        "distinct categories, first/last event), computed once per day from validated_events.",
        **_warehouse_writer(partitions),
        deps=[VALIDATED_EVENTS],
        metadata={"partition_expr": features.DAY},
        check_specs=_specs(
            USER_DAILY_AGGREGATES,
            partitions,
            {PARTIALS_CHECK: "The partials count exactly the day's validated events."},
            blocking={PARTIALS_CHECK},
        ),
    )
    def user_daily_aggregates(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
        days = partition_days(context)
        partials, verdicts, events_total, seconds = [], [], 0, 0.0
        for day in days:
            events = query(warehouse, "select * from main.validated_events where partition_date = ?", [day])
            started = time.perf_counter()
            daily = features.daily_aggregates(events).with_columns(pl.lit(day).alias(features.DAY))
            seconds += time.perf_counter() - started
            counted = int(daily["event_id__count"].sum() or 0)
            partials.append(daily)
            events_total += events.height
            verdict = Verdict(
                counted == events.height,
                "ERROR",
                f"{counted} events counted in partials, {events.height} validated events",
            )
            verdicts.append((day, verdict, {"events": events.height, "counted": counted}))
        daily = pl.concat(partials, how="diagonal_relaxed")
        yield dg.Output(
            daily,
            output_name=USER_DAILY_AGGREGATES,
            metadata={
                "dagster/row_count": daily.height,
                "days": len(days),
                "events": events_total,
                "active_users": daily[features.USER].n_unique() if daily.height else 0,
                "seconds": round(seconds, 4),
            },
        )
        per_day = DayChecks(context)
        for day, verdict, metadata in verdicts:
            yield from per_day.results(
                day, verdict, metadata, asset_key=USER_DAILY_AGGREGATES, check_name=PARTIALS_CHECK
            )

    return user_daily_aggregates


def _present_days(context: dg.AssetExecutionContext, asset: str) -> set[date]:
    return {date.fromisoformat(key) for key in context.instance.get_materialized_partitions(dg.AssetKey(asset))}


def _require(cover: features.Coverage, asset: str, upstream: str) -> None:
    """Refuses to compute from incomplete upstream days (before the start of history is not incomplete)."""
    if not cover.complete:
        raise dg.Failure(
            description=f"{asset} for {cover.day} not computed: {len(cover.missing)} upstream days of {upstream} "
            f"were never materialized ({', '.join(map(str, cover.missing[:5]))}). Materialize or backfill them.",
            metadata={"missing_days": dg.MetadataValue.json([d.isoformat() for d in cover.missing])},
        )


def state_asset(settings: Settings, partitions: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    writer = _warehouse_writer(partitions)

    # A multi-asset only to be subsettable: Dagster's automation maps a non-subsettable asset's execution set (the
    # asset and its check) through the self-dependency, and would also request D-1 whenever it requests D.
    @dg.multi_asset(
        name=f"{USER_FEATURE_STATE}_op",
        outs={
            USER_FEATURE_STATE: dg.AssetOut(
                description="Per user seen since the start of history, as of the end of D: running totals of every "
                "partial, first/last event, active days and the last day each category was seen. State D is state "
                f"D-1 plus D's {USER_DAILY_AGGREGATES}, so each day costs one day of partials; windows are "
                "differences of states.",
                group_name=writer.pop("group_name"),
                kinds=writer.pop("kinds"),
                owners=OWNERS,
                metadata={"partition_expr": features.STATE_DATE},
            )
        },
        **writer,
        deps=[
            USER_DAILY_AGGREGATES,
            dg.AssetDep(
                USER_FEATURE_STATE,
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
                ),
            ),
        ],
        check_specs=_specs(
            USER_FEATURE_STATE,
            partitions,
            {STATE_CHECK: "The running event count of D is that of D-1 plus D's events, user by user in total."},
            blocking={STATE_CHECK},
        ),
        backfill_policy=DAILY_BACKFILL,
        can_subset=True,
    )
    def user_feature_state(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
        days = partition_days(context)
        before = days[0] - timedelta(days=1)
        _require(
            features.coverage(days[0], settings.start_date, _present_days(context, USER_FEATURE_STATE), [before]),
            USER_FEATURE_STATE,
            USER_FEATURE_STATE,
        )
        previous = (
            _read_partition(warehouse, USER_FEATURE_STATE, features.STATE_DATE, before)
            if before >= settings.start_date
            else None
        )
        previous = previous if previous is not None and previous.width else None
        states, checks, seconds = [], [], 0.0
        for day in days:
            daily = query(warehouse, f"select * from main.{USER_DAILY_AGGREGATES} where {features.DAY} = ?", [day])
            started = time.perf_counter()
            state = features.advance_state(previous, daily, day)
            seconds += time.perf_counter() - started
            had = int(previous["event_id__count"].sum() or 0) if previous is not None and previous.height else 0
            added = int(daily["event_id__count"].sum() or 0) if daily.height else 0
            total = int(state["event_id__count"].sum() or 0)
            verdict = Verdict(total == had + added, "ERROR", f"{total} events in the running totals = {had} + {added}")
            checks.append((day, verdict, {"events_total": total, "events_today": added, "active_users": daily.height}))
            states.append(state)
            previous = state
        state = pl.concat(states, how="vertical")
        yield dg.Output(
            state,
            output_name=USER_FEATURE_STATE,
            metadata={"dagster/row_count": state.height, "days": len(days), "seconds": round(seconds, 4)},
        )
        if dg.AssetCheckKey(dg.AssetKey(USER_FEATURE_STATE), STATE_CHECK) not in context.selected_asset_check_keys:
            return
        per_day = DayChecks(context)
        for day, verdict, metadata in checks:
            yield from per_day.results(day, verdict, metadata, asset_key=USER_FEATURE_STATE, check_name=STATE_CHECK)

    return user_feature_state


def _window_day(warehouse: DuckDBResource, day: date, needed: list[date]) -> pl.DataFrame:
    """The feature rows of `day` from the states it needs (D and D-7, D-30, D-90 within history)."""
    placeholders = ", ".join("?" for _ in needed)
    states = query(
        warehouse, f"select * from main.{USER_FEATURE_STATE} where {features.STATE_DATE} in ({placeholders})", needed
    ).partition_by(features.STATE_DATE, as_dict=True)
    return features.window_features({key[0]: state for key, state in states.items()}, day)


def _window_checks(
    warehouse: DuckDBResource,
    history_start: date,
    frame: pl.DataFrame,
    cover: features.Coverage,
    reference: pl.DataFrame,
    reference_day: date,
) -> tuple[list[tuple[str, Verdict, dict]], dict[str, float]]:
    """The window checks of one day, and its PSI per feature (`psi/<feature>`)."""
    day = cover.day
    # Windowed features only (totals since the start of history grow by design), and only those whose
    # reference window is not cut short by the start of history.
    comparable = [
        f.name
        for f in features.FEATURES
        if f.numeric and f.window_days and reference_day - timedelta(days=f.window_days - 1) >= history_start
    ]
    report = drift.drift(reference, frame, comparable)
    active = query(
        warehouse,
        "select count(distinct user_id) as n from main.validated_events where partition_date between ? and ?",
        [day - timedelta(days=features.HORIZON - 1), day],
    )["n"][0]
    nulls, rates = feature_checks.null_rates(frame)
    ranges, broken = feature_checks.value_ranges(frame, day)
    psi = {f"psi/{name}": score for name, score in report.scores.items()}
    drifted = Verdict(
        report.status in ("ok", "not enough data"), "ERROR" if report.status == "error" else "WARN", report.describe()
    )
    checks = [
        (NULLS_CHECK, nulls, {f"null_rate/{n}": round(r, 6) for n, r in rates.items()}),
        (RANGES_CHECK, ranges, {f"violations/{n}": v for n, v in broken.items()}),
        (ROWS_CHECK, feature_checks.row_count(frame, active), {"rows": frame.height, "active": active}),
        (
            COMPLETENESS_CHECK,
            feature_checks.completeness(cover),
            {"upstream_days": len(cover.expected), "days_before_history": cover.before_history},
        ),
        (
            DRIFT_CHECK,
            drifted,
            {
                "status": report.status,
                "reference_date": reference_day.isoformat(),
                "reference_rows": report.reference_rows,
                "comparable_features": len(comparable),
                "features_drifted": len(report.drifted(drift.WARN_ALPHA, drift.WARN_PSI)),
                **psi,
                **{f"p_value/{n}": s.p_value for n, s in report.details.items() if s.p_value is not None},
            },
        ),
    ]
    return checks, psi


def windows_asset(settings: Settings, partitions: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    @daily_asset(
        USER_WINDOW_FEATURES,
        description=f"The offline feature store: per user active in the {features.HORIZON} days ending D, "
        f"{len(features.FEATURES)} features (7/30/90-day windows, totals, category pivot) as of the end of D: a "
        f"window of w days is {USER_FEATURE_STATE} of D minus that of D-w. One table keyed by (user_id, feature_date).",
        **_warehouse_writer(partitions),
        deps=[
            dg.AssetDep(
                USER_FEATURE_STATE,
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-features.HORIZON, end_offset=0, allow_nonexistent_upstream_partitions=True
                ),
            )
        ],
        metadata={
            "partition_expr": features.FEATURE_DATE,
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(f.name, str(f.dtype), description=f.description) for f in features.FEATURES]
            ),
        },
        check_specs=_specs(
            USER_WINDOW_FEATURES,
            partitions,
            {
                NULLS_CHECK: "Null rate of every feature; only means may be null (no values in the window).",
                RANGES_CHECK: "Counts and sums >= 0, means <= sums, narrower windows <= wider ones, "
                "first <= last event, timestamps within the window.",
                ROWS_CHECK: "One row per user with a validated event in the window (counted in SQL from "
                "validated_events, independently of the feature code).",
                COMPLETENESS_CHECK: "The states the windows need (D and D-7, D-30, D-90) were present; partial "
                "at the start of history.",
                DRIFT_CHECK: f"PSI of every windowed numeric feature against the same features "
                f"{DRIFT_REFERENCE_LAG_DAYS} days earlier (config). A feature drifts when its PSI is above what "
                "sampling noise gives at the day's sample sizes (a permutation test over all features together: "
                f"false alarms on {drift.WARN_ALPHA:.1%} of unshifted days at most) and above {drift.WARN_PSI} "
                f"(WARN) or {drift.ERROR_PSI} ({drift.ERROR_ALPHA:.1%}, ERROR); 'not enough data' under "
                f"{drift.MIN_SAMPLES} values a side.",
            },
            blocking={NULLS_CHECK, RANGES_CHECK, ROWS_CHECK},
        ),
    )
    def user_window_features(context: dg.AssetExecutionContext, config: WindowConfig, warehouse: DuckDBResource):
        days = partition_days(context)
        present = _present_days(context, USER_FEATURE_STATE)
        covers = [features.coverage(day, settings.start_date, present, features.state_days(day)) for day in days]
        for cover in covers:
            _require(cover, USER_WINDOW_FEATURES, USER_FEATURE_STATE)
        computed: dict[date, pl.DataFrame] = {}
        checks, seconds = [], 0.0
        for day, cover in zip(days, covers, strict=True):
            started = time.perf_counter()
            frame = computed[day] = _window_day(warehouse, day, cover.expected)
            seconds += time.perf_counter() - started
            reference_day = day - timedelta(days=config.drift_reference_lag_days)
            reference = computed.get(reference_day)
            if reference is None:
                reference = _read_partition(warehouse, USER_WINDOW_FEATURES, features.FEATURE_DATE, reference_day)
            day_checks, psi = _window_checks(warehouse, settings.start_date, frame, cover, reference, reference_day)
            checks += [(day, *check) for check in day_checks]
        frame = pl.concat(computed.values(), how="vertical")
        last = covers[-1]
        # Drift as numeric metadata the asset's Plots tab draws over time, from one-day runs (automation's);
        # a backfill range's materializations share one metadata, so its days' PSI are in the drift check only.
        plotted = {"drift_max_psi": max(psi.values(), default=0.0), **psi} if len(days) == 1 else {}
        yield dg.Output(
            frame,
            output_name=USER_WINDOW_FEATURES,
            metadata={
                "dagster/row_count": frame.height,
                "days": len(days),
                "features": len(features.FEATURES),
                "window_days_in_history": features.HORIZON - last.before_history,
                "partial_window": last.partial,
                "seconds": round(seconds, 4),
                **plotted,
            },
        )
        per_day = DayChecks(context)
        for day, name, verdict, metadata in checks:
            yield from per_day.results(day, verdict, metadata, asset_key=USER_WINDOW_FEATURES, check_name=name)

    return user_window_features


def _latest_offline(warehouse: DuckDBResource) -> pl.DataFrame:
    return query(
        warehouse,
        f"select * from main.{USER_WINDOW_FEATURES} where {features.FEATURE_DATE} = "
        f"(select max({features.FEATURE_DATE}) from main.{USER_WINDOW_FEATURES}) order by {features.USER}",
        [],
    )


def online_asset(partitions: dg.DailyPartitionsDefinition, backend: str) -> dg.AssetsDefinition:
    """`backend`: the online store's, "embedded" or "postgres" (its kind in the UI)."""

    @daily_asset(
        ONLINE_USER_FEATURES,
        description="The online store: the newest day's feature vector of every user, for lookups by batches "
        "of user ids. Embedded SQLite by default, PostgreSQL with AI_PIPELINE_ONLINE_STORE=postgres. "
        "Materializing an older day than the store holds changes nothing; a backfill range publishes its last day.",
        group_name=FEATURES_GROUP,
        kinds={"python", "sqlite" if backend == "embedded" else "postgres"},
        partitions_def=partitions,
        deps=[USER_WINDOW_FEATURES],
        check_specs=_specs(
            ONLINE_USER_FEATURES,
            partitions,
            {
                CONSISTENCY_CHECK: "Train/serve consistency: the online store equals the offline store's latest "
                "feature date, user for user and value for value."
            },
            blocking=set(),
        ),
    )
    def online_user_features(context: dg.AssetExecutionContext, warehouse: DuckDBResource, online_store: OnlineStore):
        days = partition_days(context)
        day = days[-1]
        store = online_store.client()
        current = store.feature_date()
        if current is not None and current > day:
            yield dg.MaterializeResult(
                asset_key=ONLINE_USER_FEATURES,
                metadata={"published": False, "store_feature_date": current.isoformat(), "dagster/row_count": 0},
            )
        else:
            frame = _read_partition(warehouse, USER_WINDOW_FEATURES, features.FEATURE_DATE, day)
            started = time.perf_counter()
            rows = store.publish(frame) if frame.height else 0
            yield dg.MaterializeResult(
                asset_key=ONLINE_USER_FEATURES,
                metadata={
                    "published": bool(frame.height),
                    "store_feature_date": day.isoformat() if frame.height else str(current),
                    "dagster/row_count": rows,
                    "publish_seconds": round(time.perf_counter() - started, 4),
                    "backend": store.name,
                },
            )
        online, offline = store.snapshot(), _latest_offline(warehouse)
        verdict = feature_checks.consistency(online, offline)
        per_day = DayChecks(context)
        # The store holds one day: what it is judged against is the same for every day of the run.
        for day in days:
            yield from per_day.results(
                day,
                verdict,
                {"online_rows": online.height, "offline_rows": offline.height},
                asset_key=ONLINE_USER_FEATURES,
                check_name=CONSISTENCY_CHECK,
            )

    return online_user_features


def feature_assets(
    settings: Settings, partitions: dg.DailyPartitionsDefinition, online_backend: str
) -> list[dg.AssetsDefinition]:
    return [
        aggregates_asset(partitions),
        state_asset(settings, partitions),
        windows_asset(settings, partitions),
        online_asset(partitions, online_backend),
    ]
