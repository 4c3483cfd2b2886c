"""Cluster mode for real: the daily graph and the documents lane on two Celery workers (separate processes,
`ai-pipeline worker`) through a real broker, a PostgreSQL instance, Delta Lake tables and a `chroma run` server,
against the embedded run of the same files: every table identical, also when a worker is killed in the middle of a
step.

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
import numpy as np
import polars as pl
import pytest

from ai_pipeline.cli import build_collections, generate_chat, run_days
from ai_pipeline.defs.keys import DAILY_JOB, DOCUMENTS_JOB, EMBED_SHARD
from ai_pipeline.defs.policy import DAILY_LANES
from ai_pipeline.instance import prepare_instance_home
from ai_pipeline.lib.feature_store.online_store import PostgresOnlineStore, SqliteOnlineStore
from ai_pipeline.lib.ingest.sample import generate
from ai_pipeline.lib.rag.vector_store import open_client
from ai_pipeline.settings import PROJECT_ROOT, DocSource, Settings
from ai_pipeline_support.chroma_server import chroma_server as running_chroma
from ai_pipeline_support.fleet import (
    WRITE_TIMES,
    BrokerUnavailable,
    lake_tables,
    rabbitmq_vhost,
    redis_url,
    warehouse_tables,
    worker_steps,
    workers,
)
from ai_pipeline_tests.conftest import MODEL_CACHE, require

# The slow tier (not in `make test-fast`): worker processes, the broker, runs over several days.
pytestmark = pytest.mark.slow

START, END = date(2024, 3, 1), date(2024, 3, 3)
NOTES = "notes"  # the document collection
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
    """The reference: both daily lanes over the days and a folder of notes as the one document collection, in this
    process, on the embedded instance, the DuckDB file and the embedded Chroma."""
    notes = tmp_path_factory.mktemp("notes")
    for n in range(24):
        (notes / f"note_{n:02d}.md").write_text(
            f"# Note {n}\n\nThe {n}th note is about topic {n * 7 % 24}.\n\n## Details\n\n"
            + " ".join(f"Detail {n}.{i} follows from detail {n}.{i - 1}." for i in range(1, 4 + n % 5))
            + "\n"
        )
    settings = Settings(
        home=tmp_path_factory.mktemp("embedded"),
        start_date=START,
        doc_sources=(DocSource(NOTES, notes),),
        model_cache=MODEL_CACHE,
    )
    generate(settings.landing, START, END, events_per_day=300, users=40, dirty_rate=0.02)
    with pytest.MonkeyPatch.context() as local:
        local.setenv("AI_PIPELINE_INSTANCE", "embedded")
        local.setenv("AI_PIPELINE_HOME", str(settings.home))
        local.setenv("AI_PIPELINE_START_DATE", START.isoformat())
        local.setenv("DAGSTER_HOME", str(settings.home / "unset"))  # run_days points it at the instance
        generate_chat(settings, START, END, seed=7, dirty_rate=0.02)
        for job in DAILY_LANES:
            assert all(day.success for day in run_days(settings, START, END, job))
        assert all(outcome.success for outcome in build_collections(settings))
    return settings


def _cluster(embedded: Settings, tmp_path: Path, broker: str, backend: str) -> tuple[Settings, dict[str, str]]:
    """The same landing files and ratings under a data root of their own, and the environment of cluster mode:
    Celery, Delta Lake tables under the data root (with the PostgreSQL instance's, from the `postgres_instance`
    fixture)."""
    cluster = Settings(home=tmp_path / "cluster", start_date=START)
    shutil.copytree(embedded.landing, cluster.landing)
    shutil.copyfile(embedded.feedback, cluster.feedback)
    env = {
        **os.environ,
        "AI_PIPELINE_HOME": str(cluster.home),
        "AI_PIPELINE_START_DATE": START.isoformat(),
        "AI_PIPELINE_EXECUTOR": "celery",
        "AI_PIPELINE_CELERY_BROKER": broker,
        "AI_PIPELINE_CELERY_BACKEND": backend,
        "AI_PIPELINE_TABLE_FORMAT": "delta",
        # The same collection: the notes, in shards of 10 chunks that the two workers embed side by side.
        "AI_PIPELINE_PROJECT_DOCS": "off",
        "AI_PIPELINE_DOC_SOURCES": f"{NOTES}={embedded.doc_source(NOTES).root}",
        "AI_PIPELINE_EMBED_SHARD_TEXTS": "10",
    }
    return cluster, env


def _cli(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen:
    """An `ai-pipeline` command in cluster mode: the run's process, orchestrating the workers."""
    cli = Path(sys.executable).parent / "ai-pipeline"
    with log.open("w") as out:
        return subprocess.Popen([str(cli), *args], cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _run(env: dict[str, str], log: Path, *jobs: str) -> subprocess.Popen:
    """`ai-pipeline run` of the lanes over the days."""
    return _cli(
        env, log, "run", "--start", START.isoformat(), "--end", END.isoformat(), *(["--job", *jobs] if jobs else [])
    )


def _assert_same_tables(embedded: Settings, cluster: Settings, every_lane: bool = True) -> None:
    """The lake's tables are the embedded warehouse's (all of them when every lane ran)."""
    expected, found = warehouse_tables(embedded.warehouse), lake_tables(cluster.lake)
    assert found["validated_events"] and found["user_window_features"] and found["fct_user_daily_activity"]
    if every_lane:
        assert sorted(found) == sorted(expected)
    assert set(found) <= set(expected)
    for name in found:
        assert len(found[name]) == len(expected[name]), name
        for got, want in zip(found[name], expected[name], strict=True):
            got, want = _portable(got, cluster.home), _portable(want, embedded.home)
            assert len(got) == len(want) and all(map(_same_value, got, want)), (name, got, want)


def _portable(row: tuple, home: Path) -> list:
    """A row with the data root in its texts (a lineage column names the feedback store's file) made `<root>`, and
    its fixed-size arrays (DuckDB's FLOAT[384]) as lists, as the lake reads them."""
    return [
        value.replace(str(home), "<root>")
        if isinstance(value, str)
        else list(value)
        if isinstance(value, tuple)
        else value
        for value in row
    ]


def _same_value(got, want) -> bool:
    """Equal, or for an embedding equal to float32 rounding: torch's CPU kernels sum in an order that depends on the
    process's threads, so a worker's vectors may differ from this process's in the last bits."""
    if isinstance(want, list) and want and isinstance(want[0], float):
        return isinstance(got, list) and np.allclose(got, want, rtol=0, atol=1e-6)
    return got == want


def _collection(url_or_path: str, name: str) -> list[tuple]:
    """A Chroma collection's records: id, document and metadata, sorted by id."""
    client = open_client(url=url_or_path) if url_or_path.startswith("http") else open_client(path=Path(url_or_path))
    got = client.get_collection(name).get(include=["documents", "metadatas"])
    return sorted(zip(got["ids"], got["documents"], [sorted(m.items()) for m in got["metadatas"]], strict=True))


@pytest.mark.usefixtures("postgres_instance")
def test_the_daily_graph_and_documents_on_two_celery_workers_equal_the_embedded_run(
    embedded, redis, pg_dsn, pg_schema, tmp_path
):
    cluster, env = _cluster(embedded, tmp_path, redis, redis)
    online = f"{pg_schema}.online_user_features"
    env.update(AI_PIPELINE_ONLINE_STORE="postgres", AI_PIPELINE_ONLINE_DSN=pg_dsn, AI_PIPELINE_ONLINE_TABLE=online)
    with running_chroma(tmp_path) as chroma:
        env["AI_PIPELINE_CHROMA_URL"] = chroma
        with workers(["worker-a", "worker-b"], env, tmp_path):
            run = _run(env, tmp_path / "run.log")
            assert run.wait(timeout=900) == 0, (tmp_path / "run.log").read_text()[-3000:]
            collections = _cli(env, tmp_path / "collections.log", "collections")
            assert collections.wait(timeout=600) == 0, (tmp_path / "collections.log").read_text()[-3000:]
        served = _collection(chroma, NOTES)
    assert not cluster.chroma.exists()  # the workers wrote to the server, not to a folder of the data root

    # One run per lane over the three days and one for the collection; every step ran on a worker, and both
    # workers took steps.
    with dg.DagsterInstance.from_config(str(prepare_instance_home(cluster, "postgres"))) as instance:
        records = instance.get_runs()
        assert sorted(r.job_name for r in records) == sorted([*DAILY_LANES, DOCUMENTS_JOB])
        on_workers, succeeded = [], []
        for record in records:
            assert record.status == dg.DagsterRunStatus.SUCCESS, record.job_name
            on_workers += worker_steps(instance, record.run_id)
            succeeded += [
                e.step_key for e in instance.all_logs(record.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
            ]
        daily = next(r for r in records if r.job_name == DAILY_JOB)
        assert daily.tags["dagster/asset_partition_range_start"] == START.isoformat()
        assert daily.tags["dagster/asset_partition_range_end"] == END.isoformat()
    assert sorted(step for step, _ in on_workers) == sorted(succeeded) and len(succeeded) > 30
    assert {worker for _, worker in on_workers} == {"worker-a", "worker-b"}
    shards = [(step, worker) for step, worker in on_workers if EMBED_SHARD in step]
    assert len(shards) >= 3 and {worker for _, worker in shards} == {"worker-a", "worker-b"}, shards
    _assert_same_tables(embedded, cluster)
    assert served == _collection(str(embedded.chroma), NOTES) and len(served) >= 40
    published = PostgresOnlineStore(pg_dsn, online).snapshot()
    assert published.height > 10
    assert _rows(published) == _rows(SqliteOnlineStore(embedded.online_features).snapshot())


def _rows(features: pl.DataFrame) -> list[tuple]:
    """An online store's rows, sorted, without the time they were published."""
    return sorted(features.drop([c for c in features.columns if c in WRITE_TIMES]).rows())


@pytest.mark.usefixtures("postgres_instance")
def test_a_worker_killed_in_the_middle_of_a_step_loses_nothing(embedded, rabbitmq, redis, tmp_path):
    """RabbitMQ hands a dead worker's unacknowledged step to the other worker at once (acks late): the run
    succeeds and every table is the embedded run's, with no row lost or written twice."""
    cluster, env = _cluster(embedded, tmp_path, rabbitmq, redis)
    with (
        workers(["worker-a", "worker-b"], env, tmp_path) as procs,
        dg.DagsterInstance.from_config(str(prepare_instance_home(cluster, "postgres"))) as instance,
    ):
        run = _run(env, tmp_path / "run.log", DAILY_JOB)

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
    _assert_same_tables(embedded, cluster, every_lane=False)
