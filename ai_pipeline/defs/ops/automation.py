"""Declarative automation: how new data flows down the graph without a click.

Every asset family has one condition, set here in one table (`CONDITIONS`) and evaluated by one explicit
automation sensor per lane (events, training data, documents), all running by default (Dagster's implicit one
starts stopped):

- Raw sources are pulled in by their sensors (`ai_pipeline.defs.ingest.sensors`: landing files, the operational
  table's watermark); the HTTP API has no change feed and is polled once a day after midnight (`POLLED`), as is the
  feedback store (whose sensor also rebuilds early once enough ratings arrived: `ai_pipeline.defs.llm.sensors`).
- `validated_*` (`FROM_SOURCES`) runs when ANY raw feed of the day updates: a feed that has not arrived yet
  counts as empty and re-validates the day when it does (idempotent per partition). At 02:00 UTC the day is
  closed: yesterday is validated even if no source sent anything, so a quiet day never stalls the feature chain.
- The dbt models rebuilt in full (`stg_users`, `dim_users`: not partitioned, `FULL_REBUILD`) follow any parent's
  update once no parent is about to run or running, so a day's run and the rebuild never race and one rebuild
  follows a day. `dim_users` is every user seen anywhere: it follows profiles or activity, whichever updates
  (late-arriving profiles). A blocked parent holds them back only on its newest day (a blocked day of the past
  must not stop them forever).
- Everything else below (`DOWNSTREAM`: dbt marts, features, the online store; chunks, embeddings, vectors) is
  `eager()`: any parent partition updated, none missing or in progress. Two guards on top:
  * never over a parent partition whose BLOCKING check failed (bad data stops where it was found; the
    request is not retried until the parent is materialized again, since `eager` counts a partition as
    handled once evaluated, so a failure is never retried in a loop);
  * the lookback windows: `eager` already refuses a window whose mapped upstream days exist but are missing;
    days before the start of history do not exist and are the documented partial case (dagster issue
    #34094 is about non-existent parents, which here only precede the start).
- Like `eager`, daily conditions consider the latest partition only; older days are backfills (from the UI).
"""

import dagster as dg

from ai_pipeline.defs.keys import (
    AUTOMATION_SENSOR,
    DAILY_JOB,
    DIM_USERS,
    DOCUMENTS_AUTOMATION_SENSOR,
    DOCUMENTS_JOB,
    FEATURES_GROUP,
    LLM_GROUP,
    MARTS_GROUP,
    RAG_GROUP,
    RAW_API_EVENTS,
    RAW_DOCUMENTS,
    RAW_FEEDBACK,
    STG_USERS,
    TRAINING_AUTOMATION_SENSOR,
    TRAINING_JOB,
    VALIDATED_GROUP,
)
from ai_pipeline.defs.policy import lane_tags

AC = dg.AutomationCondition

DAY_CLOSES_CRON = "0 2 * * *"
API_POLL_CRON = "30 0 * * *"

UPSTREAM_BLOCKED = AC.any_deps_match(AC.any_checks_match(AC.check_failed(), blocking_only=True)).with_label(
    "a parent's blocking check failed"
)
DOWNSTREAM = (AC.eager() & ~UPSTREAM_BLOCKED).with_label("eager, unless a parent's blocking check failed")


def _on_update(trigger: AC, *, blocked: AC = UPSTREAM_BLOCKED, waiting: AC | None = None) -> AC:
    """Like `eager`, but a parent whose day is missing does not hold the asset back, and no parent's update is lost.

    `since_last_handled` loses an update that lands between the same two ticks as the asset's previous request or
    its run's materialization: the tick sees trigger and reset at once, the reset wins (Dagster 1.13 compares their
    times only for conditions without `|`), and the day stays unvalidated until another file comes (seen in the
    daemon test). Here the tick's own trigger always counts, and a trigger that could not be acted on (a run in
    progress, a blocked parent) is remembered until the asset is requested, not merely updated: a source that lands
    while the day is being validated re-validates it. The price: an asset that something else (a backfill, the CLI)
    materialized after a blocked trigger is requested once more, which is idempotent."""
    remembered = trigger.since((AC.newly_requested() | AC.initial_evaluation()).with_label("requested"))
    condition = (
        AC.in_latest_time_window() & (trigger | remembered) & ~AC.any_deps_in_progress() & ~AC.in_progress() & ~blocked
    )
    return condition & ~waiting if waiting is not None else condition


FROM_SOURCES = _on_update(AC.any_deps_updated() | AC.cron_tick_passed(DAY_CLOSES_CRON)).with_label(
    "any source of the day updated, or the day closed (02:00 UTC)"
)
# Not partitioned: every run reads every day of its parents. It waits while a parent is requested in the same tick
# (a run of its own would race the day's run); the update is remembered and acted on once the parents are done.
NEWEST_DAY_BLOCKED = AC.any_deps_match(
    AC.in_latest_time_window() & AC.any_checks_match(AC.check_failed(), blocking_only=True)
).with_label("a parent's newest day failed a blocking check")
PARENTS_REQUESTED = AC.any_deps_match(AC.will_be_requested()).with_label("a parent is requested now")
FULL_REBUILD = _on_update(AC.any_deps_updated(), blocked=NEWEST_DAY_BLOCKED, waiting=PARENTS_REQUESTED).with_label(
    "rebuilt in full after any parent's update, once the parents' runs are done"
)
POLLED = AC.on_cron(API_POLL_CRON).with_label("polled daily at 00:30 UTC")

# The other raw assets and `raw_documents` have no condition: their sensors request them.
CONDITIONS: list[tuple[dg.AssetSelection, AC]] = [
    (dg.AssetSelection.assets(RAW_API_EVENTS, RAW_FEEDBACK), POLLED),
    (dg.AssetSelection.groups(VALIDATED_GROUP), FROM_SOURCES),
    (dg.AssetSelection.groups(MARTS_GROUP, FEATURES_GROUP, RAG_GROUP, LLM_GROUP), DOWNSTREAM),
    (dg.AssetSelection.assets(STG_USERS, DIM_USERS), FULL_REBUILD),
]


def apply_conditions(defs: dg.Definitions) -> dg.Definitions:
    """`defs` with each family's condition."""
    for selection, condition in CONDITIONS:
        defs = defs.map_resolved_asset_specs(
            func=lambda spec, c=condition: spec.replace_attributes(automation_condition=c),
            selection=selection - dg.AssetSelection.assets(RAW_DOCUMENTS),
        )
    return defs


def automation_sensors(
    lanes: dict[str, dg.AssetSelection], interval_s: int
) -> list[dg.AutomationConditionSensorDefinition]:
    """One sensor per lane (`lanes`: job name -> its assets), all running by default, at most one tick per
    `interval_s`: a tick evaluates one lane's conditions, and a slow lane does not hold back another's. The runs of
    the daily lanes carry the lane's tag (`LANE_TAG`): one run per lane at a time."""
    about = {
        DAILY_JOB: (
            AUTOMATION_SENSOR,
            "Carries new raw partitions down to validated tables, dbt marts, features and the online store.",
        ),
        TRAINING_JOB: (
            TRAINING_AUTOMATION_SENSOR,
            "Carries new conversation trees, transcript pairs and feedback down to threads, the SFT set, preference "
            "pairs and releases.",
        ),
        DOCUMENTS_JOB: (
            DOCUMENTS_AUTOMATION_SENSOR,
            "Carries changed documents to chunks, embeddings and the vector collection.",
        ),
    }
    return [
        dg.AutomationConditionSensorDefinition(
            about[job][0],
            target=selection,
            default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=interval_s,
            description=f"{about[job][1]} (Conditions in ai_pipeline/defs/ops/automation.py.)",
            run_tags=lane_tags(job),
        )
        for job, selection in lanes.items()
    ]
