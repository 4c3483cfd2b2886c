"""Declarative automation, evaluated tick by tick against a real instance (ai_pipeline/defs/ops/automation.py).

Upstream materializations and check results are reported to the instance as events (what a run would write), so
each test drives the conditions exactly and in seconds; the daemon end to end is in test_daemon.py.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ai_pipeline.defs import build_defs
from ai_pipeline.defs.dagster_internals import AssetCheckEvaluationTargetMaterializationData
from ai_pipeline.defs.keys import (
    AUTOMATION_SENSOR,
    CONSERVATION_CHECK,
    DAILY_JOB,
    DOCUMENTS_AUTOMATION_SENSOR,
    DOCUMENTS_JOB,
    LANE_TAG,
    TRAINING_AUTOMATION_SENSOR,
    TRAINING_JOB,
)
from ai_pipeline.defs.resources import resources_from_env
from ai_pipeline.instance import DEFAULT_LAKE_WRITERS, prepare_instance_home
from ai_pipeline.settings import Settings

START = date(2024, 1, 1)
# 01:00 UTC on Jan 5th: the newest daily partition is Jan 4th, before the 02:00 close of the day.
NOW = datetime(2024, 1, 5, 1, 0, tzinfo=UTC)
DAY = "2024-01-04"
DAILY = ["validated_events", "quarantined_events", "fct_user_daily_activity", "user_daily_aggregates"]
FEATURES = ["user_feature_state", "user_window_features", "online_user_features"]
FULL_REBUILDS = ["stg_users", "dim_users"]  # not partitioned


class Ticks:
    """Successive automation ticks over one instance, a minute apart."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance, time: datetime = NOW):
        self.defs, self.instance, self.cursor, self.time = defs, instance, None, time

    def __call__(self) -> dict[str, set[str]]:
        result = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, cursor=self.cursor, evaluation_time=self.time
        )
        self.cursor, self.time = result.cursor, self.time + timedelta(minutes=1)
        return {
            key.to_user_string(): set(result.get_requested_partitions(key))
            for key in self.defs.resolve_asset_graph().get_all_asset_keys()
            if result.get_requested_partitions(key)
        }

    def materialized(self, *assets: str, day: str | None = DAY) -> None:
        for asset in assets:
            self.instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=day))

    def checked(self, asset: str, check: str, passed: bool, day: str = DAY) -> None:
        """A blocking check's result on the day's latest materialization (as its run would record it)."""
        key = dg.AssetKey(asset)
        latest = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=1
        ).records[0]
        target = AssetCheckEvaluationTargetMaterializationData(
            storage_id=latest.storage_id, run_id=latest.run_id, timestamp=latest.timestamp
        )
        self.instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(
                asset_key=key,
                check_name=check,
                passed=passed,
                blocking=True,
                partition=day,
                target_materialization_data=target,
            )
        )


@contextmanager
def _ticks(home: Path, start: date = START, time: datetime = NOW) -> Iterator[Ticks]:
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        run = Ticks(build_defs(Settings(home=home, start_date=start)), instance, time)
        run()  # the first tick only records the state it starts from
        yield run


@pytest.fixture
def ticks(tmp_path) -> Iterator[Ticks]:
    with _ticks(tmp_path) as run:
        yield run


def _history(ticks: Ticks, days: list[str], skip: tuple[str, ...] = ()) -> None:
    for day in days:
        ticks.materialized(*[a for a in [*DAILY, *FEATURES] if (a, day) not in skip], day=day)
    # The history's days reach the full rebuilds, whose run then follows. (Only dim_users is reported: in a real run
    # stg_users is rebuilt with it, and a parent updated by its child's own run does not trigger the child; a
    # runless report cannot say so.)
    assert ticks().keys() <= set(FULL_REBUILDS)
    ticks.materialized("dim_users", day=None)


def test_a_new_raw_partition_flows_down_to_the_online_store_in_one_request(ticks):
    _history(ticks, ["2024-01-01", "2024-01-02", "2024-01-03"])
    assert ticks() == {}
    ticks.materialized("raw_landing_events")
    requested = ticks()
    # One run carries the day through validation, marts and features. The users lane has no new data.
    for asset in [*DAILY, *FEATURES]:
        assert requested.get(asset) == {DAY}, asset
    # dim_users (rebuilt in full) waits for that run rather than racing it in a run of its own...
    assert not {"validated_users", "stg_users", "dim_users"} & set(requested)
    ticks.materialized(*DAILY, *FEATURES)
    # ...then follows the new activity, without waiting for the day's profiles: one rebuild.
    assert ticks() == {"dim_users": {None}}
    assert ticks() == {}  # handled: not requested again


def test_a_full_rebuild_waits_while_its_parents_run_and_a_blocked_past_day_does_not_stop_it(ticks):
    _history(ticks, ["2024-01-01", "2024-01-02", "2024-01-03"])
    # A backfill re-validated a past day of profiles and its blocking check failed: the rebuild still follows the
    # newest day, which is fine.
    ticks.materialized("validated_users", "quarantined_users", day="2024-01-02")
    ticks.checked("validated_users", CONSERVATION_CHECK, passed=False, day="2024-01-02")
    ticks.materialized("validated_users", "quarantined_users")
    assert ticks() == {"stg_users": {None}}
    ticks.materialized("stg_users", day=None)
    assert ticks() == {"dim_users": {None}}
    # The newest day blocked: nothing follows it.
    ticks.materialized("validated_users", "quarantined_users")
    ticks.checked("validated_users", CONSERVATION_CHECK, passed=False)
    assert ticks() == {}


def test_a_source_that_has_not_arrived_does_not_hold_the_day_back(ticks):
    _history(ticks, ["2024-01-01", "2024-01-02", "2024-01-03"])
    ticks()
    ticks.materialized("raw_operational_events")  # landing files, the API and Online Retail not in yet
    assert ticks().get("validated_events") == {DAY}
    ticks.materialized(*DAILY, *FEATURES)
    ticks()
    ticks.materialized("raw_landing_events")  # a late source re-validates the day
    assert ticks().get("validated_events") == {DAY}


def test_a_source_that_lands_while_the_day_is_being_validated_is_not_lost(ticks):
    """The previous run's materializations and another source's new rows land between the same two ticks."""
    _history(ticks, ["2024-01-01", "2024-01-02", "2024-01-03"])
    ticks()
    ticks.materialized("raw_operational_events")
    assert ticks().get("validated_events") == {DAY}
    ticks.materialized(*DAILY, *FEATURES)  # the run that tick requested
    ticks.materialized("raw_landing_events")  # and, before the next tick, a file of the same day
    assert ticks().get("validated_events") == {DAY}
    assert ticks() == {}


def test_the_day_closes_at_two_even_when_no_source_sent_anything(ticks):
    _history(ticks, ["2024-01-01", "2024-01-02", "2024-01-03"])
    ticks.time = datetime(2024, 1, 5, 1, 58, tzinfo=UTC)
    assert "validated_events" not in ticks()
    ticks.time = datetime(2024, 1, 5, 2, 1, tzinfo=UTC)
    assert ticks().get("validated_events") == {DAY}


def test_a_failed_blocking_check_stops_the_partition_and_is_not_retried(ticks):
    _history(ticks, ["2024-01-01", "2024-01-02", "2024-01-03"])
    ticks()
    # A run validated the day and its conservation check failed: blocking, so the run stopped there.
    ticks.materialized("raw_landing_events", "validated_events", "quarantined_events")
    ticks.checked("validated_events", CONSERVATION_CHECK, passed=False)
    for _ in range(3):
        assert not ({"fct_user_daily_activity", "user_daily_aggregates"} & set(ticks()))
    # The source is fixed and the day validated again (a new materialization; its run records the check anew).
    ticks.materialized("validated_events", "quarantined_events")
    requested = ticks()
    assert requested.get("user_daily_aggregates") == {DAY}


def test_a_window_is_never_requested_over_a_missing_upstream_day(ticks):
    days = ["2024-01-01", "2024-01-02", "2024-01-03"]
    _history(ticks, days, skip=(("user_feature_state", "2024-01-02"),))
    ticks()
    ticks.materialized(*DAILY, "user_feature_state")  # Jan 4th's state, written by hand over the hole
    assert "user_window_features" not in ticks()
    ticks.materialized("user_feature_state", day="2024-01-02")  # the hole is filled (a backfill)
    ticks.materialized("user_feature_state")
    assert ticks().get("user_window_features") == {DAY}


def test_the_start_of_history_is_the_documented_partial_case(tmp_path):
    with _ticks(tmp_path, start=date(2024, 1, 4)) as ticks:
        ticks.materialized("raw_landing_events")
        requested = ticks()
    for asset in [*DAILY, *FEATURES]:
        assert requested.get(asset) == {DAY}, asset


def test_raw_sources_with_a_feed_wait_for_their_sensors_and_the_api_is_polled_after_midnight(tmp_path):
    with _ticks(tmp_path, time=datetime(2024, 1, 5, 0, 20, tzinfo=UTC)) as ticks:
        assert ticks() == {}
        ticks.time = datetime(2024, 1, 5, 0, 31, tzinfo=UTC)
        requested = ticks()
    assert requested.get("raw_api_events") == {DAY}
    assert not {"raw_landing_events", "raw_operational_events", "raw_landing_users"} & set(requested)


def test_runs_of_a_daily_lane_carry_its_tag_and_each_instance_runs_one_per_lane_at_a_time(tmp_path):
    settings = Settings(home=tmp_path / "home")
    defs = build_defs(settings)
    for job, sensor in [(DAILY_JOB, AUTOMATION_SENSOR), (TRAINING_JOB, TRAINING_AUTOMATION_SENSOR)]:
        assert defs.resolve_job_def(job).tags[LANE_TAG] == job
        assert defs.resolve_sensor_def(sensor).run_tags == {LANE_TAG: job}
    # The document collections are independent of one another: no lane limit.
    assert LANE_TAG not in defs.resolve_job_def(DOCUMENTS_JOB).tags
    assert not defs.resolve_sensor_def(DOCUMENTS_AUTOMATION_SENSOR).run_tags
    limit = [{"key": LANE_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
    for kind in ("embedded", "postgres"):
        config = yaml.safe_load((prepare_instance_home(settings, kind) / "dagster.yaml").read_text())
        assert config["concurrency"]["runs"]["tag_concurrency_limits"] == limit, kind
    with dg.DagsterInstance.from_config(str(prepare_instance_home(settings))) as instance:
        # What the run queue daemon dequeues by.
        [applied] = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert applied == limit[0]


def test_the_warehouse_pool_takes_one_writer_on_the_duckdb_file_and_several_on_the_lake(tmp_path):
    settings = Settings(home=tmp_path)
    cases = [
        ({}, 1),
        ({"AI_PIPELINE_TABLE_FORMAT": "duckdb"}, 1),
        ({"AI_PIPELINE_TABLE_FORMAT": "delta"}, DEFAULT_LAKE_WRITERS),
        ({"AI_PIPELINE_TABLE_FORMAT": "delta", "AI_PIPELINE_LAKE_WRITERS": "3"}, 3),
    ]
    for env, slots in cases:
        for kind in ("embedded", "postgres"):
            config = yaml.safe_load((prepare_instance_home(settings, kind, env) / "dagster.yaml").read_text())
            assert config["concurrency"]["pools"]["default_limit"] == slots, (env, kind)
        with dg.DagsterInstance.from_config(str(prepare_instance_home(settings, "embedded", env))) as instance:
            # What the executors claim slots of the pool `duckdb_warehouse` by.
            assert instance.get_concurrency_config().pool_config.default_pool_limit == slots, env
    # A format neither understands is refused where the instance is prepared and where the resources are built.
    wrong = {"AI_PIPELINE_TABLE_FORMAT": "parquet"}
    for build in (
        lambda: prepare_instance_home(settings, "embedded", wrong),
        lambda: resources_from_env(settings, wrong),
    ):
        with pytest.raises(ValueError, match="AI_PIPELINE_TABLE_FORMAT must be 'duckdb' or 'delta', not 'parquet'"):
            build()
