"""Per-partition lag (ai_pipeline/lib/ops/lag.py): which day is due, how far behind, how long overdue."""

from datetime import UTC, date, datetime, timedelta, timezone

import dagster as dg
import pytest

from ai_pipeline.defs import build_defs
from ai_pipeline.defs.keys import PARTITION_LAG_CHECK
from ai_pipeline.defs.ops.freshness import DEADLINES, LAG_CHECKED
from ai_pipeline.lib.ops.lag import due_day, partition_lag
from ai_pipeline.settings import Settings

START = date(2024, 1, 1)


@pytest.mark.parametrize(
    ("now", "due"),
    [
        (datetime(2024, 3, 10, 4, 59, tzinfo=UTC), date(2024, 3, 8)),  # before today's 05:00 deadline
        (datetime(2024, 3, 10, 5, 0, tzinfo=UTC), date(2024, 3, 9)),
        (datetime(2024, 3, 10, 23, 0, tzinfo=UTC), date(2024, 3, 9)),
    ],
)
def test_yesterday_is_due_once_todays_deadline_has_passed(now, due):
    assert due_day(now, 5) == due


def test_a_clock_in_another_zone_is_read_in_utc():
    tokyo = timezone(timedelta(hours=9))
    assert due_day(datetime(2024, 3, 10, 13, 0, tzinfo=tokyo), 5) == date(2024, 3, 8)  # 04:00 UTC, before 05:00


def test_on_time_when_the_due_day_is_in():
    lag = partition_lag(datetime(2024, 3, 10, 6, 0, tzinfo=UTC), 5, date(2024, 3, 9), START)
    assert lag.days_behind == 0 and lag.verdict.passed
    assert lag.metadata == {
        "due_partition": "2024-03-09",
        "newest_partition": "2024-03-09",
        "days_behind": 0,
        "hours_overdue": 0.0,
    }


def test_behind_counts_missing_days_and_hours_since_the_oldest_missed_deadline():
    # Newest is the 7th: the 8th was due at 05:00 on the 9th, 25 hours before 06:00 on the 10th.
    lag = partition_lag(datetime(2024, 3, 10, 6, 0, tzinfo=UTC), 5, date(2024, 3, 7), START)
    assert (lag.due, lag.days_behind, lag.hours_overdue) == (date(2024, 3, 9), 2, 25.0)
    assert not lag.verdict.passed and lag.verdict.severity == "ERROR"
    assert "2 due day(s) missing up to 2024-03-09; the newest is 2024-03-07; 25.0 h overdue" == lag.verdict.description


def test_nothing_materialized_counts_from_the_start_and_nothing_is_due_before_it():
    lag = partition_lag(datetime(2024, 1, 3, 6, 0, tzinfo=UTC), 5, None, START)
    assert (lag.days_behind, lag.hours_overdue) == (2, 25.0)
    assert "no partition is materialized" in lag.verdict.description
    early = partition_lag(datetime(2024, 1, 1, 12, 0, tzinfo=UTC), 5, None, START)
    assert early.days_behind == 0 and early.verdict.passed


def test_the_hourly_check_reads_partitions_not_the_latest_materialization(tmp_path):
    """A backfill of an old day must not make a late asset look on time (as the freshness policy would)."""
    today = datetime.now(UTC).date()
    settings = Settings(home=tmp_path, start_date=today - timedelta(days=10))
    defs = build_defs(settings)
    lag_keys = {k for k in defs.resolve_asset_graph().asset_check_keys if k.name == PARTITION_LAG_CHECK}
    assert {k.asset_key.to_user_string() for k in lag_keys} == set(LAG_CHECKED)
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_check_selection=lag_keys)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        for name in LAG_CHECKED:
            # Every asset has the day before yesterday; only the online store also has yesterday.
            days = [today - timedelta(days=2)] + ([today - timedelta(days=1)] if name == "online_user_features" else [])
            for day in days:
                instance.report_runless_asset_event(dg.AssetMaterialization(name, partition=day.isoformat()))
        # The newest materialization of the offline store is an old day, backfilled last.
        instance.report_runless_asset_event(
            dg.AssetMaterialization("user_window_features", partition=(today - timedelta(days=9)).isoformat())
        )
        result = job.execute_in_process(instance=instance)
    evaluations = {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == set(LAG_CHECKED)
    online = evaluations["online_user_features"]
    assert online.passed and online.metadata["days_behind"].value == 0
    due = due_day(datetime.now(UTC), DEADLINES["user_window_features"])
    offline = evaluations["user_window_features"]
    assert offline.metadata["newest_partition"].value == (today - timedelta(days=2)).isoformat()
    assert offline.metadata["days_behind"].value == (due - (today - timedelta(days=2))).days
    assert offline.passed == (due == today - timedelta(days=2))
