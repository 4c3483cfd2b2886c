"""Freshness: one policy for every asset, overrides that follow each source's cadence, and per-partition lag checks.

The global policy (warn 30 h, fail 48 h after the last materialization) fits sources without a schedule
(landing files, the operational table). Assets with a schedule get a daily deadline instead (`DEADLINES`,
UTC hours), which follows the automation in `automation.py`: the API is polled at 00:30, the day is closed
and validated by 02:00, marts and features follow eagerly. The same deadline drives the asset's
`FreshnessPolicy.cron` and its `latest_partition_on_time` check, which looks at partitions rather than at the
latest materialization of any partition (a backfill of an old day must not make a late asset look fresh).
The check is evaluated hourly by the automation sensor, in its own run.
"""

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from ai_pipeline.defs.keys import (
    DIM_USERS,
    FCT_USER_DAILY_ACTIVITY,
    ONLINE_USER_FEATURES,
    PARTITION_LAG_CHECK,
    RAW_API_EVENTS,
    USER_WINDOW_FEATURES,
    VALIDATED_EVENTS,
    VALIDATED_USERS,
)
from ai_pipeline.defs.reporting import check_result
from ai_pipeline.lib.ops.lag import partition_lag

DEFAULT_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=48), warn_window=timedelta(hours=30))
# Asset -> UTC hour by which yesterday's partition must be in.
DEADLINES = {
    RAW_API_EVENTS: 1,
    VALIDATED_EVENTS: 3,
    VALIDATED_USERS: 3,
    FCT_USER_DAILY_ACTIVITY: 4,
    DIM_USERS: 4,
    USER_WINDOW_FEATURES: 5,
    ONLINE_USER_FEATURES: 5,
}
LAG_CHECK_CRON = "15 * * * *"
# Where a late partition hurts: what consumers read.
LAG_CHECKED = (VALIDATED_EVENTS, FCT_USER_DAILY_ACTIVITY, USER_WINDOW_FEATURES, ONLINE_USER_FEATURES)


def cadence_policy(days: int) -> dg.FreshnessPolicy:
    """A source declared to deliver every `days` days: warn 6 h after a delivery is due, fail after two are missed.
    A day without a delivery within the cadence fails nothing."""
    return dg.FreshnessPolicy.time_window(
        fail_window=timedelta(days=2 * days), warn_window=timedelta(days=days, hours=6)
    )


def deadline_policy(hour: int) -> dg.FreshnessPolicy:
    """Materialized every day between 00:00 UTC and `hour`:00 UTC."""
    return dg.FreshnessPolicy.cron(deadline_cron=f"0 {hour} * * *", lower_bound_delta=timedelta(hours=hour))


def apply_freshness(defs: dg.Definitions) -> dg.Definitions:
    """Deadline policies where a cadence is known, then the default for every asset without its own."""
    for name, hour in DEADLINES.items():
        policy = deadline_policy(hour)
        defs = defs.map_resolved_asset_specs(
            func=lambda spec, p=policy: spec.replace_attributes(freshness_policy=p),
            selection=dg.AssetSelection.assets(name),
        )
    return defs.map_resolved_asset_specs(
        func=lambda spec: dg.apply_freshness_policy(spec, DEFAULT_FRESHNESS, overwrite_existing=False)
    )


def lag_checks(partitions: dg.DailyPartitionsDefinition) -> dg.AssetChecksDefinition:
    first = date.fromisoformat(partitions.start.strftime("%Y-%m-%d"))
    condition = dg.AutomationCondition.cron_tick_passed(LAG_CHECK_CRON).with_label("hourly at :15")

    @dg.multi_asset_check(
        name="partition_lag_checks",
        specs=[
            dg.AssetCheckSpec(
                PARTITION_LAG_CHECK,
                asset=name,
                description=f"Yesterday's partition is in by {DEADLINES[name]:02d}:00 UTC (per partition, unlike "
                "the freshness policy, which a backfill of an old day satisfies).",
                automation_condition=condition,
            )
            for name in LAG_CHECKED
        ],
        can_subset=True,
    )
    def _lag(context: dg.AssetCheckExecutionContext):
        now = datetime.now(UTC)
        for key in context.selected_asset_check_keys:
            days = context.instance.get_materialized_partitions(key.asset_key)
            newest = date.fromisoformat(max(days)) if days else None
            lag = partition_lag(now, DEADLINES[key.asset_key.path[-1]], newest, first)
            yield check_result(lag.verdict, lag.metadata, asset_key=key.asset_key, check_name=PARTITION_LAG_CHECK)

    return _lag
