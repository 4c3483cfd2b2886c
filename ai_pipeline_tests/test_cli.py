"""The main job as a user runs it: `ai-pipeline demo` in a fresh data root, runs visible in the instance."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from ai_pipeline.defs.resources import OnlineStore
from ai_pipeline.settings import PROJECT_ROOT, Settings

# The slow tier (not in `make test-fast`): the ai-pipeline command in subprocesses (the demo included).
pytestmark = pytest.mark.slow


def _cli(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    extra = env or {}
    env = {**os.environ, "AI_PIPELINE_HOME": str(home)}
    for name in ("DAGSTER_HOME", "AI_PIPELINE_INSTANCE", "AI_PIPELINE_START_DATE", "AI_PIPELINE_ONLINE_STORE"):
        env.pop(name, None)
    env.update(extra)
    cli = Path(sys.executable).parent / "ai-pipeline"
    return subprocess.run([str(cli), *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    return home, _cli(home, "demo", "--days", "2", "--events-per-day", "300", "--users", "50")


def test_demo_generates_runs_and_summarizes(demo):
    tmp_path, out = demo
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line[:4].isdigit() and " ok " in line]
    assert len(lines) == 2, out.stdout
    for line in lines:
        events, features = line.split()[2], line.split()[4]
        rows_in, valid, quarantined = map(int, events.split("/"))
        assert rows_in == valid + quarantined and rows_in >= 300
        assert 0 < int(features) <= 50
    assert f"Warehouse:      {tmp_path / 'warehouse.duckdb'}" in out.stdout
    assert (tmp_path / "warehouse.duckdb").is_file()
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        runs = instance.get_runs()
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        # The days are one run of a partition range per lane, as a backfill runs them.
        days = sorted(line.split()[0] for line in lines)
        for job in ("daily_pipeline", "training_data"):
            [run] = [r for r in runs if r.job_name == job]
            tags = run.tags
            assert (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]) == (
                days[0],
                days[-1],
            )
        documents = [r for r in runs if r.job_name == "document_collections"]
        assert [r.tags["dagster/partition"] for r in documents] == ["project_docs"]
        assert len(runs) == 3
    assert "\nTraining data (group llm_data):" in out.stdout
    # Nothing in the output is a Dagster warning: their causes are fixed, not filtered.
    assert "WARNING" not in out.stdout + out.stderr and "Warning" not in out.stdout + out.stderr
    # The project's own docs became a collection, passed its retrieval gate, and answered the demo question.
    collection = next(line for line in out.stdout.splitlines() if line.startswith("project_docs "))
    assert collection.split()[1] == "ok" and float(collection.split()[4]) >= 0.8, collection
    assert "1. score" in out.stdout and "project_docs:docs/rag.md" in out.stdout


def test_collections_with_no_changed_file_run_nothing_and_say_so(demo):
    home, out = demo
    assert out.returncode == 0
    started = time.perf_counter()
    again = _cli(home, "collections")
    seconds = time.perf_counter() - started
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"Collection project_docs: no file under {PROJECT_ROOT} changed since its last build" in again.stdout
    row = next(line for line in again.stdout.splitlines() if line.startswith("project_docs "))
    assert row.split()[1] == "no-op"
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        assert len([r for r in instance.get_runs() if r.job_name == "document_collections"]) == 1
    print(f"no-op `ai-pipeline collections`: {seconds:.1f} s")  # reported (README), not asserted


def test_online_lookup_and_training_set_agree(demo, tmp_path):
    home, out = demo
    assert out.returncode == 0
    store = OnlineStore(path=str(Settings(home=home).online_features)).client()
    online = store.snapshot()
    last = store.feature_date()
    user = online["user_id"][0]
    shown = _cli(home, "features", user, "nobody")
    assert shown.returncode == 0, shown.stderr
    assert f"feature date {last}" in shown.stdout and user in shown.stdout
    assert f"event_count_7d                     {online['event_count_7d'][0]}" in shown.stdout
    assert "No features for nobody" in shown.stderr

    entities = tmp_path / "entities.csv"
    entities.write_text(
        f"user_id,event_timestamp,label\n{user},{last + timedelta(days=1)}T08:30:00Z,1\nnobody,{last}T12:00:00Z,0\n"
    )
    built = _cli(home, "training-set", str(entities), str(tmp_path / "train.parquet"))
    assert built.returncode == 0, built.stderr
    train = pl.read_parquet(tmp_path / "train.parquet")
    assert train["label"].to_list() == [1, 0]
    # Train/serve consistency: the training row for "the day after the newest features" is the online vector.
    assert train.drop("event_timestamp", "label").head(1).equals(online.head(1))
    assert train.row(1, named=True)["feature_date"] is None


def test_training_set_while_a_run_writes_the_warehouse_says_so(demo, tmp_path):
    home, out = demo
    assert out.returncode == 0
    entities = tmp_path / "entities.csv"
    entities.write_text("user_id,event_timestamp\nu1,2024-01-02T08:30:00Z\n")
    # A writer in another process, as a pipeline run is, holds the file until told to stop.
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys; c = duckdb.connect({str(home / 'warehouse.duckdb')!r}); "
            "print('holding', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "holding"
        built = _cli(home, "training-set", str(entities), str(tmp_path / "train.parquet"))
    finally:
        writer.communicate("", timeout=60)
    assert built.returncode == 3
    assert f"cannot read the warehouse {home / 'warehouse.duckdb'} now, a run may be writing it" in built.stderr
    assert not (tmp_path / "train.parquet").exists()
    assert _cli(home, "training-set", str(entities), str(tmp_path / "train.parquet")).returncode == 0


def _ranked(out: subprocess.CompletedProcess) -> tuple[list[str], list[float]]:
    assert out.returncode == 0, out.stderr
    ranked = [line for line in out.stdout.splitlines() if line[:2] in {f"{n}." for n in range(1, 6)}]
    scores = [float(line.split()[2]) for line in ranked]
    assert len(ranked) == 5 and scores == sorted(scores, reverse=True), out.stdout
    return ranked, scores


def test_search_answers_from_the_project_docs(demo):
    home, out = demo
    assert out.returncode == 0
    question = "How do I switch the online store to PostgreSQL?"
    # Two sections answer it: the configuration table and the operations guide; both must rank first and second.
    relevant = ("project_docs:docs/operations.md  [Operations > Online feature store]", "[ai_pipeline > Configuration")
    hybrid = _cli(home, "search", question, "--collection", "project_docs")  # the default mode
    assert f"{question}  (project_docs, top 5, hybrid search)" in hybrid.stdout
    ranked, scores = _ranked(hybrid)
    assert all(any(r in line for r in relevant) for line in ranked[:2]), ranked[:2]
    assert scores[0] <= 0.033  # a fused score: at most 2 / 61, first in both rankings (printed to 3 places)
    dense = _cli(home, "search", question, "--collection", "project_docs", "--mode", "dense")
    assert "dense search" in dense.stdout
    ranked, scores = _ranked(dense)
    assert scores[0] > 0.3  # cosine similarities
    assert all(any(r in line for r in relevant) for line in ranked[:2]), ranked[:2]
    lexical = _cli(home, "search", question, "--collection", "project_docs", "--mode", "lexical")
    ranked, scores = _ranked(lexical)
    assert scores[0] > 1  # BM25 scores
    assert any(relevant[0] in line for line in ranked), ranked


def test_search_refuses_unknown_collections_and_bad_arguments(demo):
    home, out = demo
    assert out.returncode == 0
    chroma = home / "chroma"
    before = sorted(p.name for p in chroma.iterdir())
    typo = _cli(home, "search", "anything", "--collection", "project_doc")
    assert typo.returncode == 2
    assert typo.stderr.strip() == "error: no document collection 'project_doc'; configured: project_docs"
    assert sorted(p.name for p in chroma.iterdir()) == before  # nothing was created
    for k in ("0", "-3", "five"):
        bad = _cli(home, "search", "anything", "--k", k)
        assert bad.returncode == 2 and "usage: ai-pipeline search" in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr


def test_import_history_lands_a_bulk_export_on_its_days(shared_data, tmp_path):
    from ai_pipeline_tests.test_online_retail import _invoice_day, _spread_over_days, _write_csv

    with (shared_data / "online_retail" / "OnlineRetail.csv").open(newline="", encoding="utf-8") as f:
        lines = _spread_over_days(list(csv.DictReader(f)), 10)
    export = tmp_path / "retail_2010.csv"
    _write_csv(export, lines)
    first, last = min(map(_invoice_day, lines)), max(map(_invoice_day, lines))
    home = tmp_path / "home"
    env = {"AI_PIPELINE_START_DATE": first.isoformat()}
    out = _cli(home, "import-history", "online_retail_events", str(export), env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (
        f"1 file(s) holding days {first}..{last} placed in {home / 'landing' / 'online_retail' / str(first)}"
        in out.stdout
    )
    days = {line.split()[0]: line.split() for line in out.stdout.splitlines() if line[:4] == "2010"}
    assert sorted(days) == [(first + timedelta(days=n)).isoformat() for n in range(10)]
    per_day = {d: sum(_invoice_day(line).isoformat() == d for line in lines) for d in days}
    for day, cells in days.items():
        rows_in, valid, quarantined = map(int, cells[2].split("/"))
        assert rows_in == per_day[day] == valid + quarantined and cells[1] == "ok", cells

    unknown = _cli(home, "import-history", "retail", str(export), env=env)
    assert unknown.returncode == 2
    declared = "chat_messages, landing_events, landing_users, online_retail_events, transcript_pairs"
    assert f"error: no landing source 'retail'; declared: {declared}" in unknown.stderr
