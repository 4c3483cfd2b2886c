"""The main job as a user runs it: `ai-pipeline demo` in a fresh data root, runs visible in the instance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from ai_pipeline.settings import PROJECT_ROOT


def test_demo_generates_runs_and_summarizes(tmp_path):
    env = {**os.environ, "AI_PIPELINE_HOME": str(tmp_path)}
    env.pop("DAGSTER_HOME", None)
    env.pop("AI_PIPELINE_INSTANCE", None)
    cli = Path(sys.executable).parent / "ai-pipeline"
    out = subprocess.run(
        [str(cli), "demo", "--days", "2", "--events-per-day", "300", "--users", "50"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line[:4].isdigit() and " ok " in line]
    assert len(lines) == 2, out.stdout
    for line in lines:
        events = line.split()[2]
        rows_in, valid, quarantined = map(int, events.split("/"))
        assert rows_in == valid + quarantined and rows_in >= 300
    assert f"Warehouse:      {tmp_path / 'warehouse.duckdb'}" in out.stdout
    assert (tmp_path / "warehouse.duckdb").is_file()
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2
        assert {r.job_name for r in runs} == {"daily_pipeline"}
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(line.split()[0] for line in lines)
