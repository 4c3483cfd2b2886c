"""Cluster mode for real: the daily job's steps on two Celery workers (separate processes, `ai-pipeline worker`) through
a real broker and a PostgreSQL instance, against the embedded run of the same files: every table identical, also
when a worker is killed in the middle of a step.

The workers share the data root (one machine here; a shared volume on a fleet). Redis (127.0.0.1:6379) and RabbitMQ
(127.0.0.1:5672) run locally (`.ci/run` starts them); each test takes a Redis database or a RabbitMQ virtual host of
its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from ai_pipeline.cli import run_days
from ai_pipeline.defs.keys import DAILY_JOB
from ai_pipeline.instance import prepare_instance_home
from ai_pipeline.lib.ingest.sample import generate
from ai_pipeline.settings import PROJECT_ROOT, Settings
from ai_pipeline_support.fleet import (
    BrokerUnavailable,
    rabbitmq_vhost,
    redis_url,
    warehouse_tables,
    worker_steps,
    workers,
)
from ai_pipeline_tests.conftest import require

# The slow tier (not in `make test-fast`): worker processes, the broker, runs over several days.
pytestmark = pytest.mark.slow

START, END = date(2024, 3, 1), date(2024, 3, 3)
DBT_STEP = "dbt_daily_marts"  # a step that takes seconds: long enough to be killed in the middle


@pytest.fixture
def redis() -> str:
    try:
        return redis_url()
    except BrokerUnavailable as exc:
        require(False, str(exc))


@pytest.fixture
def rabbitmq() -> Iterator[str]:
    try:
        with rabbitmq_vhost() as url:
            yield url
    except BrokerUnavailable as exc:
        require(False, str(exc))


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> Settings:
    """The reference: the days run in this process, on the embedded instance."""
    settings = Settings(home=tmp_path_factory.mktemp("embedded"), start_date=START)
    generate(settings.landing, START, END, events_per_day=300, users=40, dirty_rate=0.02)
    with pytest.MonkeyPatch.context() as local:
        local.setenv("AI_PIPELINE_INSTANCE", "embedded")
        local.setenv("AI_PIPELINE_HOME", str(settings.home))
        local.setenv("AI_PIPELINE_START_DATE", START.isoformat())
        local.setenv("DAGSTER_HOME", str(settings.home / "unset"))  # run_days points it at the instance
        assert all(day.success for day in run_days(settings, START, END))
    return settings


def _cluster(embedded: Settings, tmp_path: Path, broker: str, backend: str) -> tuple[Settings, dict[str, str]]:
    """The same landing files under a data root of their own, and the environment of cluster mode (with the
    PostgreSQL instance's, from the `postgres_instance` fixture)."""
    cluster = Settings(home=tmp_path / "cluster", start_date=START)
    shutil.copytree(embedded.landing, cluster.landing)
    env = {
        **os.environ,
        "AI_PIPELINE_HOME": str(cluster.home),
        "AI_PIPELINE_START_DATE": START.isoformat(),
        "AI_PIPELINE_EXECUTOR": "celery",
        "AI_PIPELINE_CELERY_BROKER": broker,
        "AI_PIPELINE_CELERY_BACKEND": backend,
    }
    return cluster, env


def _run(env: dict[str, str], log: Path) -> subprocess.Popen:
    """`ai-pipeline run` of the events lane over the days: the run's process, orchestrating the workers."""
    cli = Path(sys.executable).parent / "ai-pipeline"
    args = [str(cli), "run", "--start", START.isoformat(), "--end", END.isoformat(), "--job", DAILY_JOB]
    with log.open("w") as out:
        return subprocess.Popen(args, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _assert_same_tables(embedded: Settings, cluster: Settings) -> None:
    expected, found = warehouse_tables(embedded.warehouse), warehouse_tables(cluster.warehouse)
    assert sorted(found) == sorted(expected)
    assert expected["validated_events"] and expected["user_window_features"]
    for name in expected:
        assert found[name] == expected[name], name


@pytest.mark.usefixtures("postgres_instance")
def test_the_daily_job_on_two_celery_workers_equals_the_embedded_run(embedded, redis, tmp_path):
    cluster, env = _cluster(embedded, tmp_path, redis, redis)
    with workers(["worker-a", "worker-b"], env, tmp_path):
        run = _run(env, tmp_path / "run.log")
        assert run.wait(timeout=900) == 0, (tmp_path / "run.log").read_text()[-3000:]

    # One run over the three days; every step ran on a worker, and both workers took steps.
    with dg.DagsterInstance.from_config(str(prepare_instance_home(cluster, "postgres"))) as instance:
        [record] = instance.get_runs()
        assert record.status == dg.DagsterRunStatus.SUCCESS
        assert record.tags["dagster/asset_partition_range_start"] == START.isoformat()
        assert record.tags["dagster/asset_partition_range_end"] == END.isoformat()
        on_workers = worker_steps(instance, record.run_id)
        steps = instance.all_logs(record.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
    assert sorted(step for step, _ in on_workers) == sorted(e.step_key for e in steps) and len(steps) > 10
    assert {worker for _, worker in on_workers} == {"worker-a", "worker-b"}
    _assert_same_tables(embedded, cluster)


@pytest.mark.usefixtures("postgres_instance")
def test_a_worker_killed_in_the_middle_of_a_step_loses_nothing(embedded, rabbitmq, redis, tmp_path):
    """RabbitMQ hands a dead worker's unacknowledged step to the other worker at once (acks late): the run
    succeeds and every table is the embedded run's, with no row lost or written twice."""
    cluster, env = _cluster(embedded, tmp_path, rabbitmq, redis)
    with (
        workers(["worker-a", "worker-b"], env, tmp_path) as procs,
        dg.DagsterInstance.from_config(str(prepare_instance_home(cluster, "postgres"))) as instance,
    ):
        run = _run(env, tmp_path / "run.log")

        def dbt_started() -> tuple[str, str, str] | None:
            for record in instance.get_runs():
                succeeded = instance.all_logs(record.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
                done = {e.step_key for e in succeeded}
                for step, worker in worker_steps(instance, record.run_id):
                    if step.startswith(DBT_STEP) and step not in done:
                        return record.run_id, step, worker
            return None

        deadline = time.time() + 300
        while (started := dbt_started()) is None:
            assert run.poll() is None and time.time() < deadline, "the dbt step never started on a worker"
            time.sleep(0.2)
        run_id, step, killed = started
        os.killpg(procs[killed].pid, signal.SIGKILL)
        assert run.wait(timeout=900) == 0, (tmp_path / "run.log").read_text()[-3000:]
        attempts = [worker for key, worker in worker_steps(instance, run_id) if key == step]
    survivor = ({"worker-a", "worker-b"} - {killed}).pop()
    assert attempts == [killed, survivor]
    _assert_same_tables(embedded, cluster)
