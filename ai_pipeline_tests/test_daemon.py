"""End to end with the daemon running, no clicks: a landing file in, AI-ready data out; a bad file stopped.

The real webserver and daemon (`ai_pipeline.ui.DagsterUI`) over a PostgreSQL-backed instance, a real landing zone
and DuckDB warehouse, and a real HTTP server receiving the alerts. Everything after the file drop is the
landing-file sensor, the automation sensor and the alert sensor at work.
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from ai_pipeline.defs.keys import AUTOMATION_SENSOR, QUARANTINE_RATE_CHECK
from ai_pipeline.defs.resources import OnlineStore
from ai_pipeline.lib.ingest.sample import generate
from ai_pipeline.monitoring import serve
from ai_pipeline.settings import Settings
from ai_pipeline_support.dagster_server import until
from ai_pipeline_tests.conftest import webhook
from ai_pipeline_tests.daemon import daemon, materialized, sensor_ticked, ticks_since, today

# The slow tier (not in `make test-fast`): the webserver and daemon on PostgreSQL, waiting for real sensor ticks.
pytestmark = pytest.mark.slow

DOWNSTREAM = ["fct_user_daily_activity", "user_daily_aggregates", "user_window_features"]


def _check_results(instance: dg.DagsterInstance, day) -> dict[tuple[str, str], list[dg.AssetCheckEvaluation]]:
    found: dict[tuple[str, str], list[dg.AssetCheckEvaluation]] = {}
    for record in instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION), limit=5000, ascending=True
    ):
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation.partition == day.isoformat():
            found.setdefault((evaluation.asset_key.to_user_string(), evaluation.check_name), []).append(evaluation)
    return found


def _bad_file(path: Path, day: date, rows: int) -> None:
    """A partner export whose amounts are all text: every row fails the contract (quarantine rate far above 20%)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["event_id,user_id,event_type,event_time,amount,category"]
    lines += [f"bad-{i},u{i % 7},purchase,{day}T12:00:00Z,twelve euros,books" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.usefixtures("postgres_instance")
def test_a_landing_file_flows_to_the_online_store_and_a_bad_one_is_stopped_with_an_alert(tmp_path, monkeypatch):
    current = today()
    history, new_day = current - timedelta(days=2), current - timedelta(days=1)
    settings = Settings(home=tmp_path / "home", start_date=history)
    generate(settings.landing, history, history, events_per_day=300, users=60, dirty_rate=0.0)
    with webhook() as hook:
        # The day before is history: materialized by a run of the daily job before the daemon starts.
        services = daemon(settings, history, history, monkeypatch, tmp_path, AI_PIPELINE_ALERT_WEBHOOK_URL=hook.url)
        with services as (ui, instance, by_hand):
            until(ui, "the automation sensor's first tick", lambda: sensor_ticked(ui, AUTOMATION_SENSOR), 180)
            until(
                ui,
                "the history day's raw partition",
                lambda: materialized(instance, "raw_landing_events", history),
                180,
            )

            # --- a new day's files land ---------------------------------------------------------------------
            generate(settings.landing, new_day, new_day, events_per_day=300, users=60, dirty_rate=0.0, seed=7)
            until(
                ui,
                "the online store for the new day",
                lambda: materialized(instance, "online_user_features", new_day),
                420,
            )
            # Follow-ups may still be under way (dim_users after the day's activity).
            until(ui, "the runs to finish", lambda: all(r.is_finished for r in instance.get_runs()), 300)
            runs = [run for run in instance.get_runs() if run.run_id not in by_hand]
            assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [
                (r.run_id, r.status) for r in runs
            ]
            # Nothing was launched by hand: every run came from a sensor (landing files or automation).
            assert all(
                r.tags.get("dagster/sensor_name") or r.tags.get("dagster/from_automation_condition") for r in runs
            )

            validated = materialized(instance, "validated_events", new_day)[0].asset_materialization.metadata
            assert validated["rows_in"].value == 300 and validated["rows_quarantined"].value == 0
            with duckdb.connect(str(settings.warehouse), read_only=True) as conn:
                counts = {
                    table: conn.execute(f"select count(*) from main.{table} where {column} = ?", [new_day]).fetchone()[
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
            assert OnlineStore(path=str(settings.online_features)).client().feature_date() == new_day
            checks = _check_results(instance, new_day)
            for key in [
                ("validated_events", QUARANTINE_RATE_CHECK),
                ("user_window_features", "value_ranges"),
                ("online_user_features", "online_matches_offline"),
            ]:
                assert key in checks and all(e.passed for e in checks[key]), key
            assert hook.received == []  # nothing failed, nothing posted

            # --- a bad file lands for the same day ----------------------------------------------------------
            before = {asset: len(materialized(instance, asset, new_day)) for asset in DOWNSTREAM}
            _bad_file(settings.landing / "events" / new_day.isoformat() / "partner_fix.csv", new_day, rows=900)
            until(ui, "an alert", lambda: hook.received, 300)
            alert = next(a for a in hook.received if a.get("check_name") == QUARANTINE_RATE_CHECK)
            assert alert["asset_key"] == "validated_events" and alert["partition"] == new_day.isoformat()
            assert alert["severity"] == "ERROR" and alert["metadata"]["blocking"] is True
            rate = _check_results(instance, new_day)[("validated_events", QUARANTINE_RATE_CHECK)][-1]
            assert not rate.passed and rate.severity == dg.AssetCheckSeverity.ERROR
            # A whole automation tick after the failure, and whatever it launched finished: nothing below the
            # failed blocking check is materialized again (the tick-by-tick test is in test_automation.py).
            seen = time.time()
            until(ui, "an automation tick after the alert", lambda: ticks_since(ui, AUTOMATION_SENSOR, seen) >= 1, 300)
            until(ui, "the runs to finish", lambda: all(r.is_finished for r in instance.get_runs()), 300)
            after = {asset: len(materialized(instance, asset, new_day)) for asset in DOWNSTREAM}
            assert after == before
            assert OnlineStore(path=str(settings.online_features)).client().feature_date() == new_day

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
