"""Cluster mode for real: the daily job's steps on two Celery workers (separate processes, `ai-pipeline worker`) through
the Redis broker and a PostgreSQL instance, against the embedded run of the same files: every table identical.

The workers share the data root (one machine here; a shared volume on a fleet). Redis runs on 127.0.0.1:6379
(`.ci/run` starts it); each test takes a Redis database of its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack, contextmanager
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ai_pipeline.cli import run_days
from ai_pipeline.lib.ingest.sample import generate
from ai_pipeline.settings import PROJECT_ROOT, Settings
from ai_pipeline_tests.conftest import require

# The slow tier (not in `make test-fast`): worker processes, the broker, runs over several days.
pytestmark = pytest.mark.slow

START, END = date(2024, 3, 1), date(2024, 3, 3)
# Columns that say when a row was written, not what it holds.
WRITE_TIMES = {"_ingested_at", "ingested_at", "_loaded_at", "computed_at", "materialized_at", "updated_at"}


def _redis_url() -> str:
    import redis

    url = f"redis://127.0.0.1:6379/{int(uuid.uuid4().hex, 16) % 15 + 1}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).flushdb()
    except redis.ConnectionError as exc:
        require(False, f"Redis is not reachable on 127.0.0.1:6379: {exc}")
    return url


@contextmanager
def _workers(names: list[str], env: dict[str, str], logs: Path):
    """`ai-pipeline worker` processes, each until it says it is ready; stopped (SIGTERM) at the end."""
    cli = Path(sys.executable).parent / "ai-pipeline"
    with ExitStack() as stack:
        procs = {}
        for name in names:
            log = stack.enter_context((logs / f"{name}.log").open("w"))
            procs[name] = subprocess.Popen(
                [str(cli), "worker", "--name", name], cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.time() + 120
        for name, proc in procs.items():
            while "ready." not in (logs / f"{name}.log").read_text():
                assert proc.poll() is None and time.time() < deadline, (logs / f"{name}.log").read_text()[-3000:]
                time.sleep(0.5)
        try:
            yield procs
        finally:
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()


def _tables(warehouse: Path) -> dict[str, list[tuple]]:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        names = [
            n
            for (n,) in conn.execute(
                "select table_name from information_schema.tables where table_schema = 'main'"
            ).fetchall()
        ]
        found = {}
        for name in sorted(names):
            columns = [
                c
                for (c,) in conn.execute(
                    "select column_name from information_schema.columns where table_schema = 'main' and table_name = ? "
                    "order by ordinal_position",
                    [name],
                ).fetchall()
                if c not in WRITE_TIMES
            ]
            listed = ", ".join(f'"{c}"' for c in columns)
            found[name] = conn.execute(f'select {listed} from main."{name}" order by all').fetchall()
        return found


@pytest.mark.usefixtures("postgres_instance")
def test_the_daily_job_on_two_celery_workers_equals_the_embedded_run(tmp_path, monkeypatch):
    embedded = Settings(home=tmp_path / "embedded", start_date=START)
    generate(embedded.landing, START, END, events_per_day=300, users=40, dirty_rate=0.02)
    cluster = Settings(home=tmp_path / "cluster", start_date=START)
    shutil.copytree(embedded.landing, cluster.landing)

    # The reference: everything in this process, on the embedded instance.
    with monkeypatch.context() as local:
        local.setenv("AI_PIPELINE_INSTANCE", "embedded")
        local.setenv("AI_PIPELINE_HOME", str(embedded.home))
        local.setenv("AI_PIPELINE_START_DATE", START.isoformat())
        assert all(day.success for day in run_days(embedded, START, END))

    env = {
        "AI_PIPELINE_HOME": str(cluster.home),
        "AI_PIPELINE_START_DATE": START.isoformat(),
        "AI_PIPELINE_EXECUTOR": "celery",
        "AI_PIPELINE_CELERY_BROKER": _redis_url(),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unset"))  # run_days points it at the instance
    with _workers(["worker-a", "worker-b"], dict(os.environ), tmp_path):
        outcomes = run_days(cluster, START, END)
    assert [o.day for o in outcomes] == ["2024-03-01", "2024-03-02", "2024-03-03"]
    assert all(o.success for o in outcomes), [(o.day, o.steps_failed, o.checks_failed) for o in outcomes]

    # Every step ran on a worker, and both workers took steps.
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
        events = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
        steps = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
    hosts = [
        e.dagster_event.event_specific_data.metadata["Celery worker"].value
        for e in events
        if e.dagster_event.event_specific_data and "Celery worker" in e.dagster_event.event_specific_data.metadata
    ]
    assert len(hosts) == len(steps) > 10
    assert {h.split("@")[0] for h in hosts} == {"worker-a", "worker-b"}

    expected, found = _tables(embedded.warehouse), _tables(cluster.warehouse)
    assert sorted(found) == sorted(expected)
    assert expected["validated_events"] and expected["user_window_features"]
    for name in expected:
        assert found[name] == expected[name], name
