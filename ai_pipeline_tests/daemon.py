"""The daemon tests' harness: the webserver and daemon over a PostgreSQL instance, after a run of the history."""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg

from ai_pipeline.cli import run_days
from ai_pipeline.instance import prepare_instance_home
from ai_pipeline.settings import Settings
from ai_pipeline.ui import DagsterUI, graphql
from ai_pipeline_support.dagster_server import free_port

# A test that starts this close to midnight (UTC) begins in the next day instead.
MIDNIGHT_MARGIN = timedelta(minutes=15)
SENSOR_TICKS = """
query ($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { ticks(limit: 5) { status timestamp } } }
  }
}
"""


def today() -> date:
    """The UTC date a daemon test can count on for its whole run. The automation conditions follow the newest
    partition: a day that stops being the newest halfway through a test changes what they do, so close to midnight
    this waits for it (polling, with a deadline) and returns the next date."""
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    if midnight - now < MIDNIGHT_MARGIN:
        deadline = time.monotonic() + MIDNIGHT_MARGIN.total_seconds() + 60
        while datetime.now(UTC) < midnight:
            assert time.monotonic() < deadline, "midnight did not come"
            time.sleep(1)
    return datetime.now(UTC).date()


def materialized(instance: dg.DagsterInstance, asset: str, day) -> list[dg.EventLogRecord]:
    return list(
        instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[day.isoformat()]), limit=100
        ).records
    )


@contextmanager
def daemon(settings: Settings, first, last, monkeypatch, tmp_path: Path, **env: str):
    """Days `first`..`last` materialized by a run of the daily job, then the webserver and daemon over the
    PostgreSQL instance of the environment; yields the services, the instance and the ids of the runs before them."""
    env = {
        "AI_PIPELINE_HOME": str(settings.home),
        "AI_PIPELINE_START_DATE": settings.start_date.isoformat(),
        "AI_PIPELINE_INSTANCE": "postgres",
        # The tests write their files in one go: a second of stillness is enough to call them written.
        "AI_PIPELINE_LANDING_SETTLE_S": "1",
        # Every sensor ticks at most every 10 s instead of 30-60 s: the tests wait for several ticks in a row.
        "AI_PIPELINE_SENSOR_INTERVAL_S": "10",
        # The documents lane is not what these tests watch: without a collection its runs do not take the 2 cores
        # from the daily lane's.
        "AI_PIPELINE_PROJECT_DOCS": "off",
        **env,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert all(day.success for day in run_days(settings, first, last))
    ui = DagsterUI(port=free_port(), log=tmp_path / "services.log")
    with ui, dg.DagsterInstance.from_config(str(prepare_instance_home(settings, "postgres"))) as instance:
        yield ui, instance, {run.run_id for run in instance.get_runs()}


def finished(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun | None:
    run = instance.get_run_by_id(run_id)
    return run if run.is_finished else None


def sensor_ticked(ui: DagsterUI, name: str) -> bool:
    return ticks_since(ui, name, 0) > 0


def ticks_since(ui: DagsterUI, name: str, since: float) -> int:
    """The sensor's finished ticks (of its last five) that started after the Unix time `since`."""
    location = graphql(ui.url, "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }")
    selector = {
        "repositoryLocationName": location["workspaceOrError"]["locationEntries"][0]["name"],
        "repositoryName": "__repository__",
        "sensorName": name,
    }
    ticks = graphql(ui.url, SENSOR_TICKS, {"selector": selector})["sensorOrError"]["sensorState"]["ticks"]
    return sum(t["timestamp"] > since and t["status"] in ("SUCCESS", "SKIPPED") for t in ticks)
