"""A real Dagster webserver and daemon for tests and benchmarks: a temporary data root, a fresh instance, GraphQL.

    with dagster_server(tmp_path / "home", start_date=date(2024, 1, 1)) as server:
        run_id = server.launch_run(["raw_landing_events"], partition="2024-01-02")
        assert server.wait_for_run(run_id) == "SUCCESS"

The services are `ai_pipeline.ui.DagsterUI` (the same launcher as `ai-pipeline ui`) over `workspace.yaml`, with
an environment built from the arguments only (no AI_PIPELINE_* or DAGSTER_* variable of the caller leaks in).
The instance is embedded (SQLite under the data root) or PostgreSQL (a fresh database, dropped afterwards);
`default_instance_kind()` picks PostgreSQL under CI=true. Sensors and schedules are stopped before the daemon
starts unless named in `keep_running`, so a test sees only the runs it asked for (`keep_running=None` leaves
every one as declared: the end-to-end automation test wants them all).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg

from ai_pipeline.settings import Settings
from ai_pipeline.ui import DagsterUI, graphql
from ai_pipeline_support import IN_CI
from ai_pipeline_support.postgres import postgres_database

ASSET_JOB = "__ASSET_JOB"  # the implicit job the UI launches asset selections with
RUN_DONE = {"SUCCESS", "FAILURE", "CANCELED"}
BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
T = TypeVar("T")

_INSTIGATORS = """
query ($selector: RepositorySelector!) {
  repositoryOrError(repositorySelector: $selector) {
    __typename
    ... on Repository {
      sensors { id name sensorState { status } }
      schedules { id name scheduleState { status } }
    }
    ... on Error { message }
  }
}
"""
_STOP_SENSOR = """
mutation ($id: String!) {
  stopSensor(id: $id) {
    __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on Error { message }
  }
}
"""
_STOP_SCHEDULE = """
mutation ($id: String!) {
  stopRunningSchedule(id: $id) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on Error { message }
  }
}
"""
_LAUNCH_RUN = """
mutation ($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on Error { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
_LAUNCH_BACKFILL = """
mutation ($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""
_RUN_STATUS = """
query ($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status } ... on Error { message } }
}
"""
_BACKFILL_STATUS = """
query ($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status error { message } }
    ... on Error { message }
  }
}
"""


def free_port() -> int:
    """A port nobody listens on right now (the services bind it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def default_instance_kind() -> str:
    """PostgreSQL under CI=true (the UI must be proven on it), else AI_PIPELINE_TEST_INSTANCE or embedded."""
    return "postgres" if IN_CI else os.environ.get("AI_PIPELINE_TEST_INSTANCE", "embedded")


def _unwrap(result: dict, ok: str, what: str) -> dict:
    """A GraphQL union result of type `ok`, or an AssertionError with the error's type and message."""
    if result["__typename"] != ok:
        reasons = result.get("message") or [e["message"] for e in result.get("errors", [])]
        raise AssertionError(f"{what}: {result['__typename']}: {reasons}")
    return result


def log_tail(ui: DagsterUI, lines: int = 40) -> str:
    if not ui.log or not ui.log.exists():
        return ""
    tail = ui.log.read_text(errors="replace").splitlines()[-lines:]
    return f"last lines of {ui.log}:\n" + "\n".join(tail)


def until(ui: DagsterUI, what: str, condition: Callable[[], T], timeout_s: float, interval_s: float = 2) -> T:
    """The first truthy `condition()`; fails with the services' last log lines if a service dies or time runs out
    (a bound on a hung run, never a performance assertion)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = condition()
        if found:
            return found
        try:
            ui._check_alive()
        except RuntimeError as exc:
            raise AssertionError(f"{what}: {exc}\n{log_tail(ui)}") from exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s\n{log_tail(ui)}")
        time.sleep(interval_s)


@dataclass
class DagsterServer:
    """The running services, the settings their code location uses, and GraphQL helpers for the UI's flows."""

    ui: DagsterUI
    settings: Settings
    location: str
    repository: str

    @property
    def url(self) -> str:
        return self.ui.url

    @property
    def log(self) -> Path | None:
        return self.ui.log

    def query(self, query: str, variables: Mapping[str, Any] | None = None) -> dict:
        return graphql(self.url, query, variables)

    @contextmanager
    def instance(self) -> Iterator[dg.DagsterInstance]:
        """The services' instance, opened in this process (for assertions on storage)."""
        with dg.DagsterInstance.from_config(str(self.ui.dagster_home)) as instance:
            yield instance

    def until(self, what: str, condition: Callable[[], T], timeout_s: float, interval_s: float = 2) -> T:
        return until(self.ui, what, condition, timeout_s, interval_s)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.ui, lines)

    def stop_instigators(self, keep_running: Collection[str] = ()) -> list[str]:
        """Stops every running sensor and schedule not named in `keep_running`; returns the names stopped."""
        selector = {"repositoryLocationName": self.location, "repositoryName": self.repository}
        repo = _unwrap(self.query(_INSTIGATORS, {"selector": selector})["repositoryOrError"], "Repository", "repo")
        stopped = []
        for sensor in repo["sensors"]:
            if sensor["name"] not in keep_running and sensor["sensorState"]["status"] == "RUNNING":
                result = self.query(_STOP_SENSOR, {"id": sensor["id"]})["stopSensor"]
                _unwrap(result, "StopSensorMutationResult", f"stop sensor {sensor['name']}")
                stopped.append(sensor["name"])
        for schedule in repo["schedules"]:
            if schedule["name"] not in keep_running and schedule["scheduleState"]["status"] == "RUNNING":
                result = self.query(_STOP_SCHEDULE, {"id": schedule["id"]})["stopRunningSchedule"]
                _unwrap(result, "ScheduleStateResult", f"stop schedule {schedule['name']}")
                stopped.append(schedule["name"])
        return stopped

    def selector(self, assets: Sequence[str]) -> dict:
        return {
            "repositoryLocationName": self.location,
            "repositoryName": self.repository,
            "jobName": ASSET_JOB,
            "assetSelection": [{"path": [asset]} for asset in assets],
        }

    def launch_run(self, assets: Sequence[str], partition: str | None = None) -> str:
        """One run materializing `assets` (and their checks) for `partition`, as the UI's "Materialize" does."""
        tags = [{"key": "dagster/partition", "value": partition}] if partition else []
        params = {"selector": self.selector(assets), "executionMetadata": {"tags": tags}}
        result = self.query(_LAUNCH_RUN, {"params": params})["launchRun"]
        return _unwrap(result, "LaunchRunSuccess", f"launch {assets} {partition}")["run"]["runId"]

    def launch_backfill(
        self,
        assets: Sequence[str],
        partitions: Sequence[str],
        *,
        exact: bool = False,
        unpartitioned: Sequence[str] = (),
    ) -> str:
        """An asset backfill through Dagster's backfill daemon (its backfill policy decides the runs).

        Given partition names, Dagster targets them at the selection's roots and whatever they map to downstream
        (the 90 days of windows after them, too); `exact` targets every asset's range first..last and nothing more,
        and each of `unpartitioned` once (after its parents).
        """
        if exact:
            span = {"range": {"start": partitions[0], "end": partitions[-1]}}
            params = {
                "partitionsByAssets": [{"assetKey": {"path": [a]}, "partitions": span} for a in assets]
                + [{"assetKey": {"path": [a]}, "partitions": None} for a in unpartitioned]
            }
        else:
            params = {"partitionNames": list(partitions), "assetSelection": [{"path": [a]} for a in assets]}
        result = self.query(_LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        return _unwrap(result, "LaunchBackfillSuccess", f"backfill {assets}")["backfillId"]

    def wait_for_run(self, run_id: str, timeout_s: float = 300) -> str:
        """The run's final status (SUCCESS, FAILURE or CANCELED)."""

        def status() -> str | None:
            run = _unwrap(self.query(_RUN_STATUS, {"runId": run_id})["runOrError"], "Run", f"run {run_id}")
            return run["status"] if run["status"] in RUN_DONE else None

        return self.until(f"run {run_id} to finish", status, timeout_s)

    def wait_for_backfill(self, backfill_id: str, timeout_s: float = 600) -> str:
        """The backfill's final status (COMPLETED_SUCCESS, COMPLETED_FAILED, FAILED, ...)."""

        def status() -> str | None:
            backfill = _unwrap(
                self.query(_BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"],
                "PartitionBackfill",
                f"backfill {backfill_id}",
            )
            return backfill["status"] if backfill["status"] in BACKFILL_DONE else None

        return self.until(f"backfill {backfill_id} to finish", status, timeout_s, interval_s=3)


def service_env(
    home: Path,
    *,
    start_date: date,
    instance: str,
    postgres: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The services' whole environment: this process's minus every AI_PIPELINE_* and DAGSTER_* variable, plus
    the test's data root, start date and instance, the DAGSTER_PG_* of `postgres`, and `env` on top."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AI_PIPELINE_", "DAGSTER_"))}
    return {
        **base,
        "AI_PIPELINE_HOME": str(home),
        "AI_PIPELINE_START_DATE": start_date.isoformat(),
        "AI_PIPELINE_INSTANCE": instance,
        **(postgres or {}),
        **(env or {}),
    }


@contextmanager
def dagster_server(
    home: Path,
    *,
    start_date: date,
    instance: str | None = None,
    port: int | None = None,
    keep_running: Collection[str] | None = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[DagsterServer]:
    """The webserver and daemon over a data root `home` (landing files may be written before or after) and a fresh
    instance of kind `instance` (default: `default_instance_kind()`), on `port` (default: a free one).
    Their output goes to `home/dagster-services.log`."""
    kind = instance or default_instance_kind()
    if kind not in ("embedded", "postgres"):
        raise ValueError(f"instance must be 'embedded' or 'postgres', not {kind!r}")
    with postgres_database() if kind == "postgres" else nullcontext() as postgres:
        services_env = service_env(home, start_date=start_date, instance=kind, postgres=postgres, env=env)
        ui = DagsterUI(port=port or free_port(), env=services_env, log=home / "dagster-services.log")
        try:
            ui.start_webserver()
            ui.wait_until_ready()
            entries = graphql(ui.url, "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }")
            (location,) = [e["name"] for e in entries["workspaceOrError"]["locationEntries"]]
            info = graphql(ui.url, "{ instance { info } }")["instance"]["info"]
            if ("PostgresRunStorage" in info) != (kind == "postgres"):
                raise RuntimeError(f"the services did not start on a {kind} instance:\n{info}")
            server = DagsterServer(ui, Settings.from_env(services_env), location, "__repository__")
            if keep_running is not None:
                server.stop_instigators(keep_running)
            ui.start_daemon()
            yield server
        finally:
            ui.stop()
