"""Failure alerts: the payload, its delivery to a real HTTP server, and the alerting sensor over real failed runs.

The sensor is ticked against a real Dagster instance (SQLite in a temp dir, and the project's PostgreSQL
instance configuration) after real runs: a landing file without a required column fails the raw asset's
ERROR check, and an operational source on a closed port fails the run.
"""

from __future__ import annotations

import json
import math
import socket
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from ai_pipeline.defs import build_defs
from ai_pipeline.defs.keys import ALERTS_SENSOR, DAILY_JOB
from ai_pipeline.defs.ops.alerts import failure_alerts_sensor
from ai_pipeline.defs.policy import REACT_INTERVAL_S
from ai_pipeline.defs.resources import ALERT_WEBHOOK, OPS_DB, AlertWebhook, OperationalDatabase
from ai_pipeline.instance import prepare_instance_home
from ai_pipeline.lib.ops import alerts
from ai_pipeline.settings import Settings
from ai_pipeline_support.postgres import pg_execute
from ai_pipeline_tests.conftest import WEBHOOK_SECRET as SECRET
from ai_pipeline_tests.conftest import landing_zone, require, webhook

DAY = date(2024, 2, 1)
UI = "http://dagster.internal:3000"
MISSING_TIME = "event_id,user_id,event_type,amount\ny1,u1,click,1\n"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------------------------- pure module


def _alert(**changes) -> alerts.Alert:
    base = alerts.Alert(
        alert_id="r1:check:7",
        kind=alerts.CHECK_FAILED,
        run_id="r1",
        job_name="daily_pipeline",
        occurred_at=datetime(2024, 2, 2, 3, 4, 5, tzinfo=UTC),
        description="events/2024-02-01/bad.csv: missing required column event_time",
        run_url=alerts.run_url(UI, "r1"),
        asset_key="raw_landing_events",
        asset_url=alerts.asset_url(UI, ["raw_landing_events"]),
        partition="2024-02-01",
        check_name="schema_matches_contract",
        severity="ERROR",
        metadata={"rate": math.nan, "amount": Decimal("12.50"), "files": ("a.csv",), "nested": {"inf": math.inf}},
    )
    return replace(base, **changes)


def test_json_safe_makes_every_value_plain_json():
    value = {
        "nan": math.nan,
        "ninf": -math.inf,
        "ok": 0.25,
        "decimal": Decimal("1.10"),
        "when": datetime(2024, 1, 5, 10, tzinfo=UTC),
        "day": date(2024, 1, 5),
        "path": Path("/tmp/x"),
        "tags": {"b", "a"},
        "raw": b"caf\xe9",
        1: [None, True, 3],
        "other": object,
    }
    safe = alerts.json_safe(value)
    assert json.loads(json.dumps(safe, allow_nan=False)) == safe
    assert safe == {
        "nan": "nan",
        "ninf": "-inf",
        "ok": 0.25,
        "decimal": "1.10",
        "when": "2024-01-05T10:00:00+00:00",
        "day": "2024-01-05",
        "path": "/tmp/x",
        "tags": ["a", "b"],
        "raw": "caf\\xe9",
        "1": [None, True, 3],
        "other": "<class 'object'>",
    }


def test_payload_names_asset_partition_check_and_run():
    payload = _alert().payload()
    assert json.loads(json.dumps(payload, allow_nan=False)) == payload
    assert payload == {
        "alert_id": "r1:check:7",
        "kind": "asset_check_failed",
        "text": "ERROR check schema_matches_contract failed on raw_landing_events [2024-02-01]: "
        "events/2024-02-01/bad.csv: missing required column event_time (http://dagster.internal:3000/runs/r1)",
        "asset_key": "raw_landing_events",
        "asset_url": "http://dagster.internal:3000/assets/raw_landing_events",
        "partition": "2024-02-01",
        "check_name": "schema_matches_contract",
        "severity": "ERROR",
        "description": "events/2024-02-01/bad.csv: missing required column event_time",
        "metadata": {"rate": "nan", "amount": "12.50", "files": ["a.csv"], "nested": {"inf": "inf"}},
        "run_id": "r1",
        "job_name": "daily_pipeline",
        "run_url": "http://dagster.internal:3000/runs/r1",
        "occurred_at": "2024-02-02T03:04:05+00:00",
    }
    assert alerts.asset_url(UI, ["a b", "c/d"]) == "http://dagster.internal:3000/assets/a%20b/c%2Fd"


def test_post_delivers_the_json_and_reports_failures_without_the_secret_path():
    with webhook() as hook:
        alerts.post(hook.url, _alert(), timeout_s=5)
        assert hook.received == [_alert().payload()]
    with webhook(answer=lambda n: 500) as hook:
        with pytest.raises(alerts.DeliveryError, match=r"answered HTTP 500: 'no'") as error:
            alerts.post(hook.url, _alert(), timeout_s=5)
        assert SECRET not in str(error.value)
    with webhook(delay_s=2.0) as hook:
        with pytest.raises(alerts.DeliveryError, match=r"no answer from http://127\.0\.0\.1:\d+ within 0\.2 s"):
            alerts.post(hook.url, _alert(), timeout_s=0.2)
    unreachable = f"http://127.0.0.1:{closed_port()}/hooks/{SECRET}"
    with pytest.raises(
        alerts.DeliveryError, match=r"cannot reach http://127\.0\.0\.1:\d+ \(ConnectionError\)"
    ) as error:
        alerts.post(unreachable, _alert(), timeout_s=5)
    assert SECRET not in str(error.value) and error.value.__cause__ is None and error.value.__suppress_context__


# ------------------------------------------------------------------------------------------ the sensor


@pytest.fixture(params=["embedded", "postgres"])
def instance(request, tmp_path, monkeypatch) -> Iterator[dg.DagsterInstance]:
    """The project's instance configurations: embedded (SQLite, run-sharded event log) and PostgreSQL."""
    name = None
    if request.param == "postgres":
        admin = "host=127.0.0.1 port=5432 dbname=postgres user=postgres connect_timeout=5"
        try:
            pg_execute(admin, "select 1")
        except psycopg2.OperationalError as exc:
            require(False, f"PostgreSQL is not reachable on 127.0.0.1:5432: {exc}")
        name = f"ai_pipeline_alerts_{uuid.uuid4().hex[:12]}"
        pg_execute(admin, f"create database {name}")
        for key, value in {"HOST": "127.0.0.1", "PORT": "5432", "USER": "postgres", "PASSWORD": "", "DB": name}.items():
            monkeypatch.setenv(f"DAGSTER_PG_{key}", value)
    try:
        home = prepare_instance_home(Settings(home=tmp_path / "instance"), request.param)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield instance
    finally:
        if name:
            pg_execute(admin, f"drop database if exists {name} with (force)")


def _settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", start_date=DAY)


def _run(settings: Settings, instance: dg.DagsterInstance, day: date, *assets: str) -> dg.ExecuteInProcessResult:
    # The operational source points at a closed port: its raw asset fails, and with it the run.
    closed = OperationalDatabase(dsn=f"host=127.0.0.1 port={closed_port()} dbname=ops user=ops connect_timeout=5")
    job = build_defs(settings, {**landing_zone(settings), OPS_DB: closed}).resolve_job_def(DAILY_JOB)
    return job.execute_in_process(
        partition_key=day.isoformat(),
        instance=instance,
        asset_selection=[dg.AssetKey(a) for a in assets],
        raise_on_error=False,
    )


def _tick(settings: Settings, url: str | None, instance: dg.DagsterInstance, cursor: str | None):
    webhook = AlertWebhook(url=url, ui_url=UI)
    sensor = failure_alerts_sensor(webhook, REACT_INTERVAL_S)
    return sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources={ALERT_WEBHOOK: webhook}))


def test_failed_checks_and_runs_are_posted_once_and_kept_until_delivered(tmp_path, instance):
    settings = _settings(tmp_path)
    (settings.landing / "events" / DAY.isoformat()).mkdir(parents=True)
    (settings.landing / "events" / DAY.isoformat() / "bad.csv").write_text(MISSING_TIME)
    # One run, two alerts: the failed ERROR schema check of raw_landing_events, and the run's failure.
    failed = _run(settings, instance, DAY, "raw_landing_events", "raw_operational_events")
    assert not failed.success
    run_id = failed.run_id

    # The webhook takes the first alert, then fails: the first is kept as delivered, the second waits.
    with webhook(answer=lambda n: 200 if n == 0 else 503) as flaky:
        partial = _tick(settings, flaky.url, instance, None)
    [check] = flaky.received
    assert "answered HTTP 503" in partial.skip_reason.skip_message
    assert json.loads(partial.cursor) == {"after": None, "delivered": [check["alert_id"]]}
    assert check["kind"] == "asset_check_failed"
    assert (check["asset_key"], check["partition"], check["check_name"], check["severity"]) == (
        "raw_landing_events",
        DAY.isoformat(),
        "schema_matches_contract",
        "ERROR",
    )
    assert "events/2024-02-01/bad.csv" in check["description"] and "event_time" in check["description"]
    assert check["metadata"]["inputs"] == 1 and check["metadata"]["inputs_with_schema_errors"] == 1
    assert check["metadata"]["schema_errors"] == [check["description"]]
    assert check["metadata"]["blocking"] is False
    assert check["run_id"] == run_id and check["run_url"] == f"{UI}/runs/{run_id}"
    assert check["asset_url"] == f"{UI}/assets/raw_landing_events"
    assert check["job_name"] == DAILY_JOB

    # An unreachable webhook delivers nothing: the tick fails and its cursor is not advanced.
    with pytest.raises(alerts.DeliveryError, match="cannot reach") as error:
        _tick(settings, f"http://127.0.0.1:{closed_port()}/hooks/{SECRET}", instance, partial.cursor)
    assert SECRET not in str(error.value)

    with webhook() as hook:
        rest = _tick(settings, hook.url, instance, partial.cursor)
        again = _tick(settings, hook.url, instance, rest.cursor)
    [run_failed] = hook.received
    assert rest.skip_reason.skip_message == "1 alerts posted"
    assert again.skip_reason.skip_message == "no new failures" and again.cursor == rest.cursor
    assert json.loads(rest.cursor)["delivered"] == [] and json.loads(rest.cursor)["after"] is not None
    assert run_failed["kind"] == "run_failed" and run_failed["alert_id"] == f"{run_id}:run_failed"
    assert (run_failed["run_id"], run_failed["partition"], run_failed["job_name"]) == (
        run_id,
        DAY.isoformat(),
        DAILY_JOB,
    )
    assert run_failed["run_url"] == f"{UI}/runs/{run_id}"
    assert run_failed["metadata"]["assets"] == ["raw_landing_events", "raw_operational_events"]
    [step] = run_failed["metadata"]["failed_steps"]
    assert step["step"] == "raw_operational_events" and "OperationalError" in step["error"]
    assert run_failed["description"] == step["error"] and "dbname=ops" not in json.dumps(run_failed)

    # A run whose checks pass is not an alert; a later failure is, and nothing before it is posted again.
    (settings.landing / "events" / "2024-02-02").mkdir(parents=True)
    (settings.landing / "events" / "2024-02-02" / "good.csv").write_text(
        "event_id,user_id,event_type,event_time\ne1,u1,click,2024-02-02T10:00:00Z\n"
    )
    assert _run(settings, instance, date(2024, 2, 2), "raw_landing_events").success
    (settings.landing / "events" / "2024-02-03").mkdir(parents=True)
    (settings.landing / "events" / "2024-02-03" / "bad.csv").write_text(MISSING_TIME)
    later = _run(settings, instance, date(2024, 2, 3), "raw_landing_events")
    with webhook() as hook:
        _tick(settings, hook.url, instance, rest.cursor)
    assert [(a["kind"], a["run_id"], a["partition"]) for a in hook.received] == [
        ("asset_check_failed", later.run_id, "2024-02-03")
    ]


def test_without_a_webhook_the_sensor_says_so_and_does_not_post_history_later(tmp_path, instance):
    settings = _settings(tmp_path)
    assert not _run(settings, instance, DAY, "raw_operational_events").success
    sensor = build_defs(settings).resolve_sensor_def(ALERTS_SENSOR)
    assert sensor.metadata["configured"].value is False
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    off = _tick(settings, None, instance, None)
    assert off.skip_reason.skip_message == "AI_PIPELINE_ALERT_WEBHOOK_URL is not set: failures are not posted"
    assert json.loads(off.cursor)["after"] is not None
    with webhook() as hook:
        on = _tick(settings, hook.url, instance, off.cursor)
        assert hook.received == [] and on.skip_reason.skip_message == "no new failures"
        # With no cursor at all (a new sensor), nothing that failed is left out.
        _tick(settings, hook.url, instance, None)
        assert [a["kind"] for a in hook.received] == ["run_failed"]
