"""The UI's flows at the GraphQL level, against the real webserver and daemon (`ai_pipeline.ui`), and the
`ai-pipeline ui` command's clean stop.

One server for the module (PostgreSQL-backed under CI=true) over 60 days of small generated landing files. What the
webserver reports is compared with what the project's own code says (the Definitions, the landing reader):
the asset graph, one partition materialized with its checks, and a 60-partition backfill through Dagster's
backfill daemon (one run per partition) with every partition's check verdict.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import requests

from ai_pipeline.defs import build_defs
from ai_pipeline.defs.keys import CONSERVATION_CHECK, DUPLICATES_CHECK, QUARANTINE_RATE_CHECK, SCHEMA_CHECK
from ai_pipeline.lib.ingest.expectations import EVENTS_CONTRACT, EVENTS_STATISTICS
from ai_pipeline.lib.ingest.landing import read_landing_day
from ai_pipeline.lib.ingest.sample import generate
from ai_pipeline.settings import Settings
from ai_pipeline.sources import load_sources
from ai_pipeline.ui import BIN, DagsterUI
from ai_pipeline_support.dagster_server import DagsterServer, dagster_server, free_port, service_env

# The slow tier (not in `make test-fast`): a running webserver and daemon.
pytestmark = pytest.mark.slow

START = date(2024, 1, 1)
DAYS = [START + timedelta(days=i) for i in range(60)]
# 2024-01-06: its landing file names a column twice, which fails the schema check (lib/ingest/sample.py FILE_DEFECTS).
DAY = date(2024, 1, 6)
EVENT_LANE = [
    "raw_landing_events",
    "raw_online_retail_events",
    "raw_operational_events",
    "raw_api_events",
    "validated_events",
    "quarantined_events",
]
VALIDATED_CHECKS = [
    CONSERVATION_CHECK,
    QUARANTINE_RATE_CHECK,
    DUPLICATES_CHECK,
    f"great_expectations_{EVENTS_CONTRACT}",
    f"great_expectations_{EVENTS_STATISTICS}",
]

ASSET_GRAPH = """
{
  assetNodes {
    assetKey { path }
    groupName
    isPartitioned
    partitionDefinition { type }
    dependencyKeys { path }
    assetChecksOrError { __typename ... on AssetChecks { checks { name } } }
  }
}
"""
RUN = """
query ($runId: ID!) {
  runOrError(runId: $runId) { ... on Run { status tags { key value } } }
}
"""
MATERIALIZATIONS = """
query ($keys: [AssetKeyInput!], $day: String!) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    latestMaterializationByPartition(partitions: [$day]) {
      runId
      partition
      metadataEntries { label ... on IntMetadataEntry { intValue } }
    }
  }
}
"""
# What the asset's Checks tab shows: each check with the execution for the latest materialization.
CHECKS_TAB = """
query ($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      assetChecksOrError {
        ... on AssetChecks {
          checks {
            name
            executionForLatestMaterialization {
              runId
              status
              partition
              evaluation { partition success description }
            }
          }
        }
      }
    }
  }
}
"""
BACKFILL_RUNS = """
query ($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags}, limit: 500) {
    ... on Runs { results { runId status tags { key value } } }
  }
}
"""
PARTITIONS = """
query ($key: AssetKeyInput!, $check: String!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      partitionStats { numMaterialized numFailed numMaterializing }
      assetPartitionStatuses { ... on TimePartitionStatuses { ranges { startKey endKey status } } }
      assetCheckOrError(checkName: $check) {
        ... on AssetCheck {
          partitionStatuses { ... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status } } }
        }
      }
    }
  }
}
"""
CHECK_EXECUTIONS = """
query ($key: AssetKeyInput!, $check: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $check, limit: 1000) {
    runId
    status
    partition
    evaluation { partition success description }
  }
}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterServer]:
    home = tmp_path_factory.mktemp("ui-graphql") / "home"
    generate(home / "landing", DAYS[0], DAYS[-1], events_per_day=30, users=12, dirty_rate=0.05)
    with dagster_server(home, start_date=START) as running:
        yield running


def _schema_verdicts(settings: Settings, days: list[date]) -> dict[str, tuple[bool, str]]:
    """Per day, the schema check's verdict and description as the landing reader (not Dagster) computes them."""
    source = next(s for s in load_sources() if s.name == "landing_events")
    verdicts = {}
    for day in days:
        read = read_landing_day(
            settings.landing,
            source.folder,
            day,
            source.contract_model,
            source=source.name,
            ingested_at=datetime.now(UTC),
            mapping=source.mapping,
        )
        errors = [r.error for r in read.reports if r.error]
        verdicts[day.isoformat()] = (not errors, errors[0] if errors else "ok")
    return verdicts


def _days_in(ranges: list[dict], status: str) -> set[str]:
    """The daily partition keys covered by the ranges with `status` (start and end keys are inclusive)."""
    days = set()
    for r in ranges:
        if r["status"] == status:
            day, end = date.fromisoformat(r["startKey"]), date.fromisoformat(r["endKey"])
            while day <= end:
                days.add(day.isoformat())
                day += timedelta(days=1)
    return days


def test_asset_graph_is_the_projects_definitions(server: DagsterServer):
    nodes = {tuple(n["assetKey"]["path"]): n for n in server.query(ASSET_GRAPH)["assetNodes"]}
    defs = build_defs(server.settings)
    specs = {tuple(spec.key.path): spec for spec in defs.resolve_all_asset_specs()}
    assert set(nodes) == set(specs)
    checks_by_asset: dict[tuple[str, ...], set[str]] = {}
    for check in defs.resolve_asset_graph().asset_check_keys:
        checks_by_asset.setdefault(tuple(check.asset_key.path), set()).add(check.name)
    for key, spec in specs.items():
        node = nodes[key]
        assert node["groupName"] == spec.group_name, key
        assert {tuple(d["path"]) for d in node["dependencyKeys"]} == {tuple(d.asset_key.path) for d in spec.deps}, key
        assert {c["name"] for c in node["assetChecksOrError"]["checks"]} == checks_by_asset.get(key, set()), key
    # The shape the UI shows: daily lanes and one dynamic partition per document collection.
    assert nodes[("validated_events",)]["partitionDefinition"]["type"] == "TIME_WINDOW"
    assert nodes[("vector_collection",)]["partitionDefinition"]["type"] == "DYNAMIC"
    assert {tuple(d["path"]) for d in nodes[("validated_events",)]["dependencyKeys"]} >= {
        ("raw_landing_events",),
        ("raw_online_retail_events",),
    }
    assert set(VALIDATED_CHECKS) <= {c["name"] for c in nodes[("validated_events",)]["assetChecksOrError"]["checks"]}


def test_materializing_one_partition_records_the_assets_and_their_checks(server: DagsterServer):
    run_id = server.launch_run(EVENT_LANE, partition=DAY.isoformat())
    assert server.wait_for_run(run_id) == "SUCCESS", server.log_tail()
    tags = {t["key"]: t["value"] for t in server.query(RUN, {"runId": run_id})["runOrError"]["tags"]}
    assert tags["dagster/partition"] == DAY.isoformat()

    nodes = server.query(MATERIALIZATIONS, {"keys": [{"path": [a]} for a in EVENT_LANE], "day": DAY.isoformat()})
    latest = {n["assetKey"]["path"][0]: n["latestMaterializationByPartition"][0] for n in nodes["assetNodes"]}
    assert set(latest) == set(EVENT_LANE)
    assert all(m and m["runId"] == run_id and m["partition"] == DAY.isoformat() for m in latest.values()), latest
    # The numbers the UI plots are the pipeline's: every landed event is in, and each is valid or quarantined.
    meta = {e["label"]: e.get("intValue") for e in latest["validated_events"]["metadataEntries"]}
    landed = sum(
        read_landing_day(
            server.settings.landing, s.folder, DAY, s.contract_model, source=s.name, ingested_at=datetime.now(UTC)
        ).raw.height
        for s in load_sources()
        if s.contract == "Event"
    )
    assert landed > 0 and meta["rows_in"] == landed
    assert meta["dagster/row_count"] + meta["rows_quarantined"] == landed

    # The Checks tab of validated_events: every check ran in this run, for this partition.
    tab = server.query(CHECKS_TAB, {"key": {"path": ["validated_events"]}})["assetNodeOrError"]
    executions = {c["name"]: c["executionForLatestMaterialization"] for c in tab["assetChecksOrError"]["checks"]}
    for name in VALIDATED_CHECKS:
        execution = executions[name]
        assert execution["runId"] == run_id and execution["partition"] == DAY.isoformat(), (name, execution)
        assert execution["status"] in ("SUCCEEDED", "FAILED") and execution["evaluation"] is not None, name
    assert executions[CONSERVATION_CHECK]["status"] == "SUCCEEDED"
    # The schema check of the raw landing asset: the verdict and the reason the landing reader gives.
    tab = server.query(CHECKS_TAB, {"key": {"path": ["raw_landing_events"]}})["assetNodeOrError"]
    [schema] = [
        c["executionForLatestMaterialization"] for c in tab["assetChecksOrError"]["checks"] if c["name"] == SCHEMA_CHECK
    ]
    passed, description = _schema_verdicts(server.settings, [DAY])[DAY.isoformat()]
    assert not passed and "doubled_column.csv" in description
    assert schema["status"] == "FAILED" and schema["evaluation"]["description"] == description


@pytest.mark.timeout(1200)
def test_backfill_of_60_partitions_records_every_partition_and_its_check(server: DagsterServer):
    keys = [d.isoformat() for d in DAYS]
    backfill_id = server.launch_backfill(["raw_landing_events"], keys)
    # A bound on a hung backfill, not a speed assertion.
    assert server.wait_for_backfill(backfill_id, timeout_s=1080) == "COMPLETED_SUCCESS", server.log_tail()

    runs = server.query(BACKFILL_RUNS, {"tags": [{"key": "dagster/backfill", "value": backfill_id}]})
    runs = runs["runsOrError"]["results"]
    # Runs of up to 30 days (the daily assets' backfill policy): two runs whose ranges cover the 60 days once.
    assert len(runs) == 2 and {r["status"] for r in runs} == {"SUCCESS"}
    run_days = {}
    for run in runs:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        start = date.fromisoformat(tags["dagster/asset_partition_range_start"])
        end = date.fromisoformat(tags["dagster/asset_partition_range_end"])
        run_days[run["runId"]] = [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]
    assert sorted(day for days in run_days.values() for day in days) == keys

    statuses = server.query(PARTITIONS, {"key": {"path": ["raw_landing_events"]}, "check": SCHEMA_CHECK})
    node = statuses["assetNodeOrError"]
    assert node["partitionStats"] == {"numMaterialized": 60, "numFailed": 0, "numMaterializing": 0}
    assert node["assetPartitionStatuses"]["ranges"] == [
        {"startKey": keys[0], "endKey": keys[-1], "status": "MATERIALIZED"}
    ]

    # Every partition's check: recorded for that partition, by the run that covered it, with the reader's verdict.
    expected = _schema_verdicts(server.settings, DAYS)
    assert 0 < sum(not passed for passed, _ in expected.values()) < 60  # the sample has both kinds of days
    executions = server.query(CHECK_EXECUTIONS, {"key": {"path": ["raw_landing_events"]}, "check": SCHEMA_CHECK})
    executions = [e for e in executions["assetCheckExecutions"] if e["runId"] in run_days]
    evaluated = [e for e in executions if e["evaluation"]]
    # One verdict per day, naming its day (Dagster 1.13 would give a range run's check result no partition).
    assert sorted(e["evaluation"]["partition"] for e in evaluated) == keys
    assert not [e for e in executions if not e["evaluation"]], "planned check executions left without a result"
    for execution in evaluated:
        key = execution["evaluation"]["partition"]
        passed, description = expected[key]
        assert key in run_days[execution["runId"]] and execution["partition"] == key
        assert execution["evaluation"]["success"] is passed, key
        assert execution["evaluation"]["description"] == description, key
    # The check's Partitions view in the UI: every day passed or failed as the reader says, none skipped.
    ranges = node["assetCheckOrError"]["partitionStatuses"]["ranges"]
    assert _days_in(ranges, "SUCCEEDED") == {k for k, (passed, _) in expected.items() if passed}
    assert _days_in(ranges, "FAILED") == {k for k, (passed, _) in expected.items() if not passed}
    assert not _days_in(ranges, "SKIPPED") and not _days_in(ranges, "IN_PROGRESS")


def _processes_with(variable: str) -> list[int]:
    """Pids of live processes whose environment holds `variable` (NAME=value, unique to one test)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if variable.encode() in environ and state != "Z":
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ai_pipeline_ui_started_in_the_background_stops_cleanly(tmp_path: Path, stop_signal: signal.Signals):
    """`ai-pipeline ui &` from a script (SIGINT ignored, as bash does for background jobs) still stops on
    SIGINT and SIGTERM, with every process it started (webserver, daemon, code servers)."""
    port = free_port()
    env = service_env(tmp_path / "home", start_date=START, instance="embedded")
    env["AI_PIPELINE_TEST_MARKER"] = str(port)
    marker = f"AI_PIPELINE_TEST_MARKER={port}"
    script = f'"{BIN / "ai-pipeline"}" ui --port {port} & echo $! > pid; wait'
    # The services log to the command's stdout: a file, not a pipe that nobody drains (a full pipe blocks them).
    output = (tmp_path / "ui.log").open("wb")
    shell = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        _poll_until("the background job's pid", lambda: (tmp_path / "pid").is_file(), 60)
        _poll_until("the pid written", lambda: (tmp_path / "pid").read_text().endswith("\n"), 60)
        pid = int((tmp_path / "pid").read_text())
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            assert shell.poll() is None, f"ai-pipeline ui exited with code {shell.returncode}"
            try:
                return requests.get(f"{url}/server_info", timeout=5).ok
            except requests.RequestException:
                return False

        _poll_until("the webserver answers", answers, 300)
        # The command, the webserver, the daemon and their code servers; the instance is the data root's.
        assert len(_processes_with(marker)) >= 5
        info = requests.post(f"{url}/graphql", json={"query": "{ instance { info } }"}, timeout=30).json()
        assert str(tmp_path / "home" / "dagster") in info["data"]["instance"]["info"]
        os.kill(pid, stop_signal)
        assert shell.wait(timeout=120) == 0
        _poll_until("every process of the command to exit", lambda: not _processes_with(marker), 60)
    finally:
        for leftover in _processes_with(marker):
            os.kill(leftover, signal.SIGKILL)
        if shell.poll() is None:
            shell.kill()
        shell.wait()
        output.close()


def _poll_until(what: str, condition: Callable[[], bool], timeout_s: float) -> None:
    """Polls `condition` (a bound on a hung process, not a speed assertion)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.5)


def test_stop_ends_even_when_an_interrupt_left_a_service_handle_locked(tmp_path: Path):
    """A stop signal raises KeyboardInterrupt wherever `ai-pipeline ui` is; inside `Popen.poll` it can leave
    CPython's `Popen._waitpid_lock` held (seen once in CI: the command never exited). `stop` still ends, and the
    service is gone."""
    ui = DagsterUI(env=service_env(tmp_path / "home", start_date=START, instance="embedded"), stop_timeout_s=1)
    service = subprocess.Popen(["sleep", "600"], start_new_session=True)
    ui.processes["service"] = service
    assert service._waitpid_lock.acquire(blocking=False)  # what the interrupted poll leaves behind
    stopping = threading.Thread(target=ui.stop, daemon=True)
    stopping.start()
    stopping.join(timeout=30)
    assert not stopping.is_alive(), "stop blocked on the service's handle"
    with pytest.raises(ProcessLookupError):
        os.kill(service.pid, 0)
