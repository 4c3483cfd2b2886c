"""End to end with the daemon running, no clicks: a landing file in, AI-ready data out; a bad file stopped.

The real webserver and daemon (`ai_pipeline.ui.DagsterUI`) over a PostgreSQL-backed instance, a real landing zone
and DuckDB warehouse, and a real HTTP server receiving the alerts. Everything after the file drop is the
landing-file sensor, the automation sensor and the alert sensor at work.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from ai_pipeline.cli import run_days
from ai_pipeline.defs.keys import AUTOMATION_SENSOR, LATE_ROWS_SENSOR, QUARANTINE_RATE_CHECK
from ai_pipeline.defs.resources import OnlineStore
from ai_pipeline.instance import prepare_instance_home
from ai_pipeline.lib.ingest.sample import generate
from ai_pipeline.monitoring import serve
from ai_pipeline.settings import Settings
from ai_pipeline.ui import DagsterUI, graphql
from ai_pipeline_support.dagster_server import free_port, until
from ai_pipeline_tests.conftest import webhook

# The slow tier (not in `make test-fast`): the webserver and daemon on PostgreSQL, waiting for real sensor ticks.
pytestmark = pytest.mark.slow

TODAY = datetime.now(UTC).date()
HISTORY, NEW_DAY = TODAY - timedelta(days=2), TODAY - timedelta(days=1)
DOWNSTREAM = ["fct_user_daily_activity", "user_daily_aggregates", "user_window_features"]
SENSOR_TICKS = """
query ($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { ticks(limit: 5) { status timestamp } } }
  }
}
"""


def _materialized(instance: dg.DagsterInstance, asset: str, day) -> list[dg.EventLogRecord]:
    return list(
        instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[day.isoformat()]), limit=100
        ).records
    )


def _check_results(instance: dg.DagsterInstance, day) -> dict[tuple[str, str], list[dg.AssetCheckEvaluation]]:
    found: dict[tuple[str, str], list[dg.AssetCheckEvaluation]] = {}
    for record in instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION), limit=5000, ascending=True
    ):
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation.partition == day.isoformat():
            found.setdefault((evaluation.asset_key.to_user_string(), evaluation.check_name), []).append(evaluation)
    return found


def _bad_file(path: Path, rows: int) -> None:
    """A partner export whose amounts are all text: every row fails the contract (quarantine rate far above 20%)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["event_id,user_id,event_type,event_time,amount,category"]
    lines += [f"bad-{i},u{i % 7},purchase,{NEW_DAY}T12:00:00Z,twelve euros,books" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")


@contextmanager
def _daemon(settings: Settings, first, last, monkeypatch, tmp_path: Path, **env: str):
    """Days `first`..`last` materialized by a run of the daily job, then the webserver and daemon over the
    PostgreSQL instance of the environment; yields the services, the instance and the ids of the runs before them."""
    env = {
        "AI_PIPELINE_HOME": str(settings.home),
        "AI_PIPELINE_START_DATE": settings.start_date.isoformat(),
        "AI_PIPELINE_INSTANCE": "postgres",
        # The tests write their files in one go: a second of stillness is enough to call them written.
        "AI_PIPELINE_LANDING_SETTLE_S": "1",
        **env,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert all(day.success for day in run_days(settings, first, last))
    ui = DagsterUI(port=free_port(), log=tmp_path / "services.log")
    with ui, dg.DagsterInstance.from_config(str(prepare_instance_home(settings, "postgres"))) as instance:
        yield ui, instance, {run.run_id for run in instance.get_runs()}


@pytest.mark.usefixtures("postgres_instance")
def test_a_landing_file_flows_to_the_online_store_and_a_bad_one_is_stopped_with_an_alert(tmp_path, monkeypatch):
    settings = Settings(home=tmp_path / "home", start_date=HISTORY)
    generate(settings.landing, HISTORY, HISTORY, events_per_day=300, users=60, dirty_rate=0.0)
    with webhook() as hook:
        # The day before is history: materialized by a run of the daily job before the daemon starts.
        daemon = _daemon(settings, HISTORY, HISTORY, monkeypatch, tmp_path, AI_PIPELINE_ALERT_WEBHOOK_URL=hook.url)
        with daemon as (ui, instance, by_hand):
            until(ui, "the automation sensor's first tick", lambda: _sensor_ticked(ui, AUTOMATION_SENSOR), 180)
            until(
                ui,
                "the history day's raw partition",
                lambda: _materialized(instance, "raw_landing_events", HISTORY),
                180,
            )

            # --- a new day's files land ---------------------------------------------------------------------
            generate(settings.landing, NEW_DAY, NEW_DAY, events_per_day=300, users=60, dirty_rate=0.0, seed=7)
            until(
                ui,
                "the online store for the new day",
                lambda: _materialized(instance, "online_user_features", NEW_DAY),
                420,
            )
            # Follow-ups may still be under way (dim_users after the day's activity, the documents lane).
            until(ui, "the runs to finish", lambda: all(r.is_finished for r in instance.get_runs()), 300)
            runs = [run for run in instance.get_runs() if run.run_id not in by_hand]
            assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [
                (r.run_id, r.status) for r in runs
            ]
            # Nothing was launched by hand: every run came from a sensor (landing files or automation).
            assert all(
                r.tags.get("dagster/sensor_name") or r.tags.get("dagster/from_automation_condition") for r in runs
            )

            validated = _materialized(instance, "validated_events", NEW_DAY)[0].asset_materialization.metadata
            assert validated["rows_in"].value == 300 and validated["rows_quarantined"].value == 0
            with duckdb.connect(str(settings.warehouse), read_only=True) as conn:
                counts = {
                    table: conn.execute(f"select count(*) from main.{table} where {column} = ?", [NEW_DAY]).fetchone()[
                        0
                    ]
                    for table, column in [
                        ("validated_events", "partition_date"),
                        ("fct_user_daily_activity", "activity_date"),
                        ("user_window_features", "feature_date"),
                    ]
                }
            assert counts["validated_events"] == 300
            assert (
                counts["fct_user_daily_activity"] > 0
                and counts["user_window_features"] >= counts["fct_user_daily_activity"]
            )
            assert OnlineStore(path=str(settings.online_features)).client().feature_date() == NEW_DAY
            checks = _check_results(instance, NEW_DAY)
            for key in [
                ("validated_events", QUARANTINE_RATE_CHECK),
                ("user_window_features", "value_ranges"),
                ("online_user_features", "online_matches_offline"),
            ]:
                assert key in checks and all(e.passed for e in checks[key]), key
            assert hook.received == []  # nothing failed, nothing posted

            # --- a bad file lands for the same day ----------------------------------------------------------
            before = {asset: len(_materialized(instance, asset, NEW_DAY)) for asset in DOWNSTREAM}
            _bad_file(settings.landing / "events" / NEW_DAY.isoformat() / "partner_fix.csv", rows=900)
            until(ui, "an alert", lambda: hook.received, 300)
            alert = next(a for a in hook.received if a.get("check_name") == QUARANTINE_RATE_CHECK)
            assert alert["asset_key"] == "validated_events" and alert["partition"] == NEW_DAY.isoformat()
            assert alert["severity"] == "ERROR" and alert["metadata"]["blocking"] is True
            rate = _check_results(instance, NEW_DAY)[("validated_events", QUARANTINE_RATE_CHECK)][-1]
            assert not rate.passed and rate.severity == dg.AssetCheckSeverity.ERROR
            # Two more automation ticks, and whatever they launched finished: nothing below the failed blocking
            # check is materialized again.
            seen = time.time()
            until(ui, "two more automation ticks", lambda: _ticks_since(ui, AUTOMATION_SENSOR, seen) >= 2, 300)
            until(ui, "the runs to finish", lambda: all(r.is_finished for r in instance.get_runs()), 300)
            after = {asset: len(_materialized(instance, asset, NEW_DAY)) for asset in DOWNSTREAM}
            assert after == before
            assert OnlineStore(path=str(settings.online_features)).client().feature_date() == NEW_DAY

            # --- and the exporter shows it, read from the event log --------------------------------------------
            succeeded = sum(r.status == dg.DagsterRunStatus.SUCCESS for r in instance.get_runs())
            server, _ = serve(instance, "127.0.0.1", 0)
            try:
                with requests.Session() as session:
                    session.trust_env = False
                    text = session.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=60).text
            finally:
                server.shutdown()
            samples = {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            }

            def value(name: str, **labels: str) -> float:
                return sum(
                    v for (n, found), v in samples.items() if n == name and labels.items() <= dict(found).items()
                )

            assert value("ai_pipeline_runs_total", status="failure") >= 1
            assert value("ai_pipeline_runs_total", status="success") >= succeeded > 0
            quarantine = {"asset": "validated_events", "check": QUARANTINE_RATE_CHECK}
            assert value("ai_pipeline_data_quality_score", **quarantine) == 0
            assert value("ai_pipeline_check_value", **quarantine, key="quarantine_rate") > 0.2
            assert value("ai_pipeline_records_processed_total", asset="online_user_features") > 0


def _finished(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun | None:
    run = instance.get_run_by_id(run_id)
    return run if run.is_finished else None


def _sensor_ticked(ui: DagsterUI, name: str) -> bool:
    return _ticks_since(ui, name, 0) > 0


def _ticks_since(ui: DagsterUI, name: str, since: float) -> int:
    """The sensor's finished ticks (of its last five) that started after the Unix time `since`."""
    location = graphql(ui.url, "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }")
    selector = {
        "repositoryLocationName": location["workspaceOrError"]["locationEntries"][0]["name"],
        "repositoryName": "__repository__",
        "sensorName": name,
    }
    ticks = graphql(ui.url, SENSOR_TICKS, {"selector": selector})["sensorOrError"]["sensorState"]["ticks"]
    return sum(t["timestamp"] > since and t["status"] in ("SUCCESS", "SKIPPED") for t in ticks)


@pytest.mark.usefixtures("postgres_instance")
def test_a_late_file_updates_its_day_and_every_later_one_without_a_click(tmp_path, monkeypatch):
    day, newest = TODAY - timedelta(days=3), TODAY - timedelta(days=1)
    settings = Settings(home=tmp_path / "home", start_date=day)
    generate(settings.landing, day, newest, events_per_day=200, users=40, dirty_rate=0.0)
    with _daemon(settings, day, newest, monkeypatch, tmp_path) as (ui, instance, by_hand):
        until(ui, "the late-rows sensor's first tick", lambda: _sensor_ticked(ui, LATE_ROWS_SENSOR), 180)
        # The landing sensors read the history's folders once more on their first tick (their cursor starts empty).
        until(
            ui,
            "the re-read of the history",
            lambda: len(_materialized(instance, "raw_landing_events", newest)) > 1,
            180,
        )
        until(ui, "those runs to finish", lambda: all(r.is_finished for r in instance.get_runs()), 300)

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
                for r in _materialized(instance, "online_user_features", newest)
                if r.timestamp > dropped
                and instance.get_run_by_id(r.run_id).tags.get("dagster/sensor_name") == LATE_ROWS_SENSOR
            ]

        [record] = until(ui, "the late rows' range run", rerun_of_the_first_day, 420)
        # Its checks still run after the materialization: wait for the run's end before judging it.
        run = until(ui, "the range run's end", lambda: _finished(instance, record.run_id), 300)
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
