"""End to end with the daemon running, no clicks: rows that land two days late update their day and every later one.

The real webserver and daemon over a PostgreSQL-backed instance (`ai_pipeline_tests.daemon`): after the history's
run, everything is the landing-file sensor, the late-rows sensor and the automation sensor at work.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import pytest

from ai_pipeline.defs.keys import LATE_ROWS_SENSOR, landing_sensor
from ai_pipeline.defs.resources import OnlineStore
from ai_pipeline.lib.ingest.sample import generate
from ai_pipeline.settings import Settings
from ai_pipeline_support.dagster_server import until
from ai_pipeline_tests.daemon import daemon, finished, materialized, sensor_ticked, today

# The slow tier (not in `make test-fast`): the webserver and daemon on PostgreSQL, waiting for real sensor ticks.
pytestmark = pytest.mark.slow


@pytest.mark.usefixtures("postgres_instance")
def test_a_late_file_updates_its_day_and_every_later_one_without_a_click(tmp_path, monkeypatch):
    current = today()
    day, newest = current - timedelta(days=3), current - timedelta(days=1)
    settings = Settings(home=tmp_path / "home", start_date=day)
    generate(settings.landing, day, newest, events_per_day=200, users=40, dirty_rate=0.0)
    with daemon(settings, day, newest, monkeypatch, tmp_path) as (ui, instance, by_hand):
        until(ui, "the late-rows sensor's first tick", lambda: sensor_ticked(ui, LATE_ROWS_SENSOR), 180)
        # The landing sensor starts with an empty cursor over days the history's run already read in their present
        # state: it requests none of them.
        sensor = landing_sensor("landing_events")
        until(ui, "the landing sensor's first tick", lambda: sensor_ticked(ui, sensor), 180)
        # A tick submits the runs it requests before it ends.
        assert not [r for r in instance.get_runs() if r.tags.get("dagster/sensor_name") == sensor]

        # --- rows of the first day arrive two days late, in the newest day's folder --------------------------------
        late = [
            f"late-{i},late-user-{i % 3},purchase,{day}T20:{i:02d}:00Z,{10 + i}.00,books,Germany" for i in range(12)
        ]
        path = settings.landing / "events" / newest.isoformat() / "late_partner_export.csv"
        path.write_text("event_id,user_id,event_type,event_time,amount,category,country\n" + "\n".join(late) + "\n")
        dropped = datetime.now(UTC).timestamp()

        def rerun_of_the_first_day():
            return [
                r
                for r in materialized(instance, "online_user_features", newest)
                if r.timestamp > dropped
                and instance.get_run_by_id(r.run_id).tags.get("dagster/sensor_name") == LATE_ROWS_SENSOR
            ]

        [record] = until(ui, "the late rows' range run", rerun_of_the_first_day, 420)
        # Its checks still run after the materialization: wait for the run's end before judging it.
        run = until(ui, "the range run's end", lambda: finished(instance, record.run_id), 300)
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert (run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]) == (
            day.isoformat(),
            newest.isoformat(),
        )
        until(ui, "the runs to finish", lambda: all(r.is_finished for r in instance.get_runs()), 300)
        new_runs = [r for r in instance.get_runs() if r.run_id not in by_hand]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in new_runs)
        assert all(
            r.tags.get("dagster/sensor_name") or r.tags.get("dagster/from_automation_condition") for r in new_runs
        )

    with duckdb.connect(str(settings.warehouse), read_only=True) as conn:
        published = conn.execute(
            "select distinct partition_date, _arrival_date from validated_events where event_id like 'late-%'"
        ).fetchall()
        count = conn.execute("select count(*) from validated_events where event_id like 'late-%'").fetchone()[0]
        activity = conn.execute(
            "select sum(event_count) from fct_user_daily_activity "
            "where user_id like 'late-user-%' and activity_date = ?",
            [day],
        ).fetchone()[0]
        windows = conn.execute(
            "select feature_date, sum(event_count_7d) from user_window_features where user_id like 'late-user-%' "
            "group by 1 order by 1"
        ).fetchall()
    assert published == [(day, newest)] and count == 12
    assert activity == 12
    assert windows == [(day + timedelta(days=n), 12) for n in range(3)]
    store = OnlineStore(path=str(settings.online_features)).client()
    online = store.lookup(["late-user-0", "late-user-1", "late-user-2"])
    assert online["event_count_7d"].to_list() == [4, 4, 4] and store.feature_date() == newest
