"""A Celery fleet on this machine for cluster mode's tests and benchmarks: brokers and `ai-pipeline worker` processes.

Redis (127.0.0.1:6379) and RabbitMQ (127.0.0.1:5672) run locally (`scripts/ensure-brokers`); each user takes a Redis
database or a RabbitMQ virtual host of its own, so that fleets never take each other's steps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from ai_pipeline.lib import lakehouse
from ai_pipeline.settings import PROJECT_ROOT

# Columns that say when a row was written, not what it holds.
WRITE_TIMES = {"_ingested_at", "ingested_at", "_loaded_at", "computed_at", "materialized_at", "updated_at"}


class BrokerUnavailable(RuntimeError):
    """The local broker does not answer, or cannot be managed."""


def redis_url() -> str:
    """A Redis database of its own (1-15, emptied first), as a Celery broker or result backend URL."""
    import redis

    url = f"redis://127.0.0.1:6379/{int(uuid.uuid4().hex, 16) % 15 + 1}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).flushdb()
    except redis.ConnectionError as exc:
        raise BrokerUnavailable(f"Redis is not reachable on 127.0.0.1:6379: {exc}") from exc
    return url


@contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A virtual host of its own on the local RabbitMQ (guest's), deleted afterwards; yields its broker URL."""
    vhost = f"ai_pipeline_{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run(["rabbitmqctl", "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BrokerUnavailable(f"RabbitMQ is not manageable here (rabbitmqctl): {exc}") from exc
    try:
        subprocess.run(
            ["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60)


@contextmanager
def workers(names: list[str], env: dict[str, str], logs: Path) -> Iterator[dict[str, subprocess.Popen]]:
    """`ai-pipeline worker` processes (each in a session of its own, as on a host of its own), each until it says it
    is ready; stopped (SIGTERM) at the end."""
    cli = Path(sys.executable).parent / "ai-pipeline"
    procs: dict[str, subprocess.Popen] = {}
    with ExitStack() as stack:
        stack.callback(_stop, procs)
        for name in names:
            log = stack.enter_context((logs / f"{name}.log").open("w"))
            procs[name] = subprocess.Popen(
                [str(cli), "worker", "--name", name],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.time() + 120
        for name, proc in procs.items():
            while "ready." not in (logs / f"{name}.log").read_text():
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"worker {name} did not start:\n{(logs / f'{name}.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield procs


def _stop(procs: dict[str, subprocess.Popen]) -> None:
    """SIGTERM to every worker still running (a warm shutdown), SIGKILL to one that does not stop within a minute."""
    for proc in procs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs.values():
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def worker_steps(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    """(step key, worker name) of every step a worker started, in order."""
    found = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.event_specific_data
        if data and "Celery worker" in data.metadata:
            found.append((entry.step_key, data.metadata["Celery worker"].value.split("@")[0]))
    return found


def tables(conn: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    """Every table of schema `main`, its columns by name (the lake keeps a partition column last) without those
    that say when a row was written, its rows sorted."""
    names = [
        n
        for (n,) in conn.execute(
            "select table_name from information_schema.tables where table_schema = 'main'"
        ).fetchall()
    ]
    found = {}
    for name in sorted(names):
        columns = sorted(
            c
            for (c,) in conn.execute(
                "select column_name from information_schema.columns where table_schema = 'main' and table_name = ?",
                [name],
            ).fetchall()
            if c not in WRITE_TIMES
        )
        listed = ", ".join(f'"{c}"' for c in columns)
        found[name] = conn.execute(f'select {listed} from main."{name}" order by all').fetchall()
    return found


def warehouse_tables(warehouse: Path) -> dict[str, list[tuple]]:
    """`tables` of a DuckDB warehouse file."""
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return tables(conn)


def lake_tables(root: Path) -> dict[str, list[tuple]]:
    """`tables` of the lake under `root`, in their latest snapshots."""
    with duckdb.connect() as conn:
        lakehouse.attach(conn, root)
        return tables(conn)
