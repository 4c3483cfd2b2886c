"""Monitoring: the exporter fed by Dagster's event log, the Prometheus rules and the Grafana dashboard.

A real instance in a temporary folder records eight days of the feature lane (the last day five times busier
with tenfold amounts, so that the drift check fails), a failing run and a document collection with its
retrieval gate. Then `ai-pipeline metrics` serves them over HTTP and every scraped value is compared with what
the runs recorded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from ai_pipeline import monitoring
from ai_pipeline.defs import build_defs, keys
from ai_pipeline.defs.keys import DAILY_JOB, DOCUMENTS_JOB
from ai_pipeline.defs.rag.assets import register_collections
from ai_pipeline.instance import prepare_instance_home
from ai_pipeline.lib.ingest.sample import clean_events
from ai_pipeline.lib.ops import metrics
from ai_pipeline.settings import PROJECT_ROOT, DocSource, Settings
from ai_pipeline_tests.conftest import MODEL_CACHE, execute_days, require

# The slow tier (not in `make test-fast`): Dagster runs of both lanes and the exporter in a subprocess.
pytestmark = pytest.mark.slow

START = date(2024, 3, 1)
DAYS = 8  # the first day whose 7-day windows can be compared with the day before: START + 7
FEATURE_ASSETS = [
    keys.USER_DAILY_AGGREGATES,
    keys.USER_FEATURE_STATE,
    keys.USER_WINDOW_FEATURES,
    keys.ONLINE_USER_FEATURES,
]
DRIFT_LAG = {"ops": {keys.USER_WINDOW_FEATURES: {"config": {"drift_reference_lag_days": 1}}}}
COLLECTION = "notes"
DOCS = {
    "cats.md": "# Cats\n\nCats sleep up to sixteen hours a day.\n\n## Feeding\n\nAdult cats need meat: they are "
    "obligate carnivores.\n",
    "rockets.md": "# Rockets\n\nMulti-stage rockets drop empty tanks to reach orbital velocity.\n",
}
GOLDEN = {
    "threshold": 0.5,
    "questions": [
        {"question": "What do cats eat?", "gold": [{"doc_id": f"{COLLECTION}:cats.md"}]},
        {"question": "Why do rockets have stages?", "gold": [{"doc_id": f"{COLLECTION}:rockets.md"}]},
    ],
}
DEPLOY = PROJECT_ROOT / "deploy"
Samples = dict[tuple[str, frozenset], float]


# --- the pure metrics: plain records in, metric values out -------------------------------------------------------


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def _check(timestamp: float, passed: bool, severity: str, partition: str | None = "2024-03-01", **metadata):
    return metrics.CheckEvaluation("validated_events", "quarantine", partition, passed, severity, timestamp, metadata)


def test_a_check_gauge_holds_the_newest_evaluation_whatever_the_order_read():
    registry = CollectorRegistry()
    pipeline = metrics.PipelineMetrics(registry)
    labels = {"asset": "validated_events", "check": "quarantine", "partition": ""}
    pipeline.add_check(_check(20.0, False, "WARN", quarantine_rate=0.07, rows=100, note="text", flag=True))
    pipeline.add_check(_check(10.0, True, "ERROR", quarantine_rate=0.01))  # older: read later, ignored
    assert _value(registry, "ai_pipeline_data_quality_score", **labels, check_severity="warn") == 0
    assert _value(registry, "ai_pipeline_data_quality_score", **labels, check_severity="error") is None
    assert _value(registry, "ai_pipeline_check_value", **labels, key="quarantine_rate") == 0.07
    assert _value(registry, "ai_pipeline_check_value", **labels, key="rows") == 100
    assert _value(registry, "ai_pipeline_check_value", **labels, key="flag") is None  # booleans are not numbers
    # A newer evaluation replaces every series of the old one: another severity, other metadata keys.
    pipeline.add_check(_check(30.0, True, "ERROR", partition="2024-03-02", quarantine_rate=0.0))
    assert _value(registry, "ai_pipeline_data_quality_score", **labels, check_severity="warn") is None
    assert _value(registry, "ai_pipeline_data_quality_score", **labels, check_severity="error") == 1
    assert _value(registry, "ai_pipeline_check_value", **labels, key="quarantine_rate") == 0.0
    assert _value(registry, "ai_pipeline_check_value", **labels, key="rows") is None


def test_drift_scores_and_search_latencies_come_from_check_metadata():
    registry = CollectorRegistry()
    pipeline = metrics.PipelineMetrics(registry)
    drift = {"psi/amount_sum_7d": 0.4, "psi/event_count_7d": 0.02, "reference_rows": 110}
    pipeline.add_check(metrics.CheckEvaluation("windows", "drift", "2024-03-08", False, "ERROR", 1.0, drift))
    psi = {"asset": "windows", "partition": "", "feature": "amount_sum_7d"}
    assert _value(registry, "ai_pipeline_feature_drift_psi", **psi) == 0.4
    values = {"asset": "windows", "check": "drift", "partition": ""}
    assert _value(registry, "ai_pipeline_check_value", **values, key="psi/amount_sum_7d") is None  # not twice
    assert _value(registry, "ai_pipeline_check_value", **values, key="reference_rows") == 110
    quiet = {"status": "not enough data"}
    pipeline.add_check(metrics.CheckEvaluation("windows", "drift", "2024-03-09", True, "WARN", 2.0, quiet))
    assert _value(registry, "ai_pipeline_feature_drift_psi", **psi) is None

    gate = {"search_latencies_ms": [0.8, 3.0, 40.0], "search_p99_ms": 39.3}
    for collection, timestamp in (("docs", 1.0), ("docs", 2.0), ("faq", 3.0)):
        pipeline.add_check(metrics.CheckEvaluation("vectors", "gate", collection, True, "ERROR", timestamp, gate))
    histogram = "ai_pipeline_vector_search_latency_seconds"
    assert _value(registry, f"{histogram}_count", collection="docs") == 6  # every evaluation adds its searches
    assert _value(registry, f"{histogram}_sum", collection="docs") == pytest.approx(2 * 0.0438)
    assert _value(registry, f"{histogram}_bucket", collection="docs", le="0.001") == 2
    assert _value(registry, f"{histogram}_bucket", collection="docs", le="0.005") == 4
    assert _value(registry, f"{histogram}_count", collection="faq") == 3
    # Collections are entities of their own: each keeps its newest evaluation.
    for collection in ("docs", "faq"):
        labels = {"asset": "vectors", "check": "gate", "partition": collection, "check_severity": "error"}
        assert _value(registry, "ai_pipeline_data_quality_score", **labels) == 1
    broken = metrics.CheckEvaluation("vectors", "gate", "docs", True, "ERROR", 4.0, {"search_latencies_ms": "fast"})
    with pytest.raises(ValueError, match="check gate of vectors \\(partition docs\\).*search_latencies_ms"):
        pipeline.add_check(broken)
    assert _value(registry, f"{histogram}_count", collection="docs") == 6  # refused whole, before any change
    gate_labels = {"asset": "vectors", "check": "gate", "partition": "docs", "key": "search_p99_ms"}
    assert _value(registry, "ai_pipeline_check_value", **gate_labels) == 39.3


def test_runs_materializations_and_lags():
    registry = CollectorRegistry()
    pipeline = metrics.PipelineMetrics(registry)
    pipeline.add_run(metrics.FinishedRun("a", "daily", "failure", finished_at=100.0, duration=None))
    pipeline.add_run(metrics.FinishedRun("b", "daily", "success", finished_at=300.0, duration=42.0))
    pipeline.add_run(metrics.FinishedRun("c", "daily", "success", finished_at=200.0, duration=8.0))
    assert _value(registry, "ai_pipeline_runs_total", dagster_job="daily", status="success") == 2
    assert _value(registry, "ai_pipeline_runs_total", dagster_job="daily", status="canceled") == 0
    assert _value(registry, "ai_pipeline_run_duration_seconds_count", dagster_job="daily", status="failure") is None
    assert _value(registry, "ai_pipeline_run_duration_seconds_sum", dagster_job="daily", status="success") == 50
    assert (
        _value(registry, "ai_pipeline_run_last_finished_timestamp_seconds", dagster_job="daily", status="success")
        == 300
    )
    with pytest.raises(ValueError, match="run d: status 'queued'"):
        pipeline.add_run(metrics.FinishedRun("d", "daily", "queued", finished_at=1.0, duration=None))

    day = datetime(2024, 3, 2, tzinfo=UTC).timestamp()
    for partition, timestamp in (("2024-03-05", day + 900), ("2024-03-01", day + 1000), (None, day)):
        pipeline.add_materialization(metrics.Materialization("events", partition, timestamp, {"dagster/row_count": 5}))
    pipeline.add_materialization(metrics.Materialization("chunks", "docs", day, {"dagster/row_count": 7}))
    pipeline.refresh(now=day + 86400 * 5)
    assert _value(registry, "ai_pipeline_records_processed_total", asset="events") == 15
    assert _value(registry, "ai_pipeline_asset_freshness_lag_seconds", asset="events", partition="") == 86400 * 5 - 1000
    assert _value(registry, "ai_pipeline_asset_freshness_lag_seconds", asset="chunks", partition="docs") == 86400 * 5
    # The newest day (2024-03-05, ended 2024-03-06 00:00 UTC), although an older day was materialized later.
    assert _value(registry, "ai_pipeline_asset_partition_lag_seconds", asset="events") == 86400
    assert _value(registry, "ai_pipeline_asset_partition_lag_seconds", asset="chunks") is None
    assert metrics.partition_end("2024-03-05-10:00") is None and metrics.partition_label("2024-03-05-10:00") == ""


# --- the exporter on a real instance ------------------------------------------------------------------------------


def _scrape(url: str) -> tuple[Samples, str]:
    with urllib.request.urlopen(url, timeout=60) as response:
        text = response.read().decode()
    samples = {  # an empty label is no label, as Prometheus stores it
        (s.name, frozenset((k, v) for k, v in s.labels.items() if v)): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }
    return samples, text


def _get(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _family(samples: Samples, name: str) -> dict[frozenset, float]:
    return {labels: value for (sample, labels), value in samples.items() if sample == name}


def _ignore_stop_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


@contextmanager
def _exporter(home: Path, *, postgres: bool = False, launched_ignoring_stop_signals: bool = False) -> Iterator[str]:
    """`ai-pipeline metrics --port 0` on the instance under `home`; yields the /metrics URL it announces. On
    leaving, SIGTERM must stop it cleanly (exit 0), as a service manager stops it."""
    env = {**os.environ, "AI_PIPELINE_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    if not postgres:
        env.pop("AI_PIPELINE_INSTANCE", None)
    cli = Path(sys.executable).parent / "ai-pipeline"
    with (home / "exporter.log").open("w") as log:
        process = subprocess.Popen(
            [str(cli), "metrics", "--port", "0"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            preexec_fn=_ignore_stop_signals if launched_ignoring_stop_signals else None,
        )
        try:
            line = process.stdout.readline()
            assert line.startswith("Serving Prometheus metrics on http://127.0.0.1:"), (
                line + (home / "exporter.log").read_text()[-3000:]
            )
            yield line.split(" on ", 1)[1].strip()
        finally:
            process.terminate()
            try:
                rest = process.communicate(timeout=30)[0]
            except subprocess.TimeoutExpired:
                process.kill()
                raise
    assert process.returncode == 0 and rest == "Stopped the metrics exporter.\n", (process.returncode, rest)


def test_the_exporter_stops_on_sigterm_even_when_launched_with_it_ignored(tmp_path):
    """A shell's background job starts with SIGINT ignored, and Dagster gives SIGTERM SIGINT's handler: a test
    process that ran Dagster code there passes both on ignored. The exporter still serves, and stops on SIGTERM."""
    with _exporter(tmp_path, launched_ignoring_stop_signals=True) as url:
        _, text = _scrape(url)
    assert "# TYPE ai_pipeline_runs_total counter" in text


def _validated_events(settings: Settings, days: int, busy_last_day: bool = False) -> None:
    """validated_events straight into the warehouse (the ingest lane has its own tests)."""
    last = START + timedelta(days=days - 1)
    events = clean_events(START, last - timedelta(days=1), events_per_day=600, users=250, seed=7)
    if busy_last_day:
        busy = clean_events(last, last, events_per_day=3000, users=250, seed=7)
        events = pl.concat([events, busy.with_columns(pl.col("amount") * 10)])
    else:
        events = pl.concat([events, clean_events(last, last, events_per_day=600, users=250, seed=7)])
    events = events.with_columns(pl.col("event_time").dt.date().alias("partition_date"))
    with duckdb.connect(str(settings.warehouse)) as conn:
        conn.execute("create or replace table main.validated_events as select * from events")


def _daily(defs: dg.Definitions, instance: dg.DagsterInstance, day: date, assets: list[str], last: date | None = None):
    """A run of `assets` for `day`, or for `day`..`last` as one run of a backfill range."""
    job = defs.resolve_job_def(DAILY_JOB).get_subset(asset_selection={dg.AssetKey(a) for a in assets})
    return execute_days(job, instance, day, last, run_config=DRIFT_LAG if keys.USER_WINDOW_FEATURES in assets else None)


def _failing_run(defs: dg.Definitions, instance: dg.DagsterInstance):
    """Windows two days past the last materialized state: the asset refuses to compute, the run fails."""
    result = _daily(defs, instance, START + timedelta(days=DAYS + 1), [keys.USER_WINDOW_FEATURES])
    assert not result.success
    return result


@pytest.fixture(scope="module")
def lane(tmp_path_factory):
    notes = tmp_path_factory.mktemp(COLLECTION)
    for name, text in DOCS.items():
        (notes / name).write_text(text)
    (notes / "golden_questions.json").write_text(json.dumps(GOLDEN))
    source = DocSource(COLLECTION, notes, golden=notes / "golden_questions.json")
    settings = Settings(
        home=tmp_path_factory.mktemp("home"), start_date=START, doc_sources=(source,), model_cache=MODEL_CACHE
    )
    _validated_events(settings, DAYS, busy_last_day=True)
    defs = build_defs(settings)
    instance = dg.DagsterInstance.from_config(str(prepare_instance_home(settings)))
    # The running state needs every day; the windows only the last day and its drift reference, the day before.
    running = [keys.USER_DAILY_AGGREGATES, keys.USER_FEATURE_STATE]
    results = [
        _daily(defs, instance, START + timedelta(days=n), FEATURE_ASSETS if n >= DAYS - 2 else running)
        for n in range(DAYS)
    ]
    assert all(r.success for r in results)
    results.append(_failing_run(defs, instance))
    register_collections(instance, settings)
    results.append(
        defs.resolve_job_def(DOCUMENTS_JOB).execute_in_process(
            partition_key=COLLECTION, instance=instance, raise_on_error=False
        )
    )
    assert results[-1].success
    with _exporter(settings.home) as url:
        before = time.time()
        first, text = _scrape(url)
        after = time.time()
        again = _failing_run(defs, instance)
        second, _ = _scrape(url)
    yield {
        "settings": settings,
        "defs": defs,
        "instance": instance,
        "results": results,
        "again": again,
        "first": first,
        "text": text,
        "second": second,
        "scraped_between": (before, after),
    }
    instance.dispose()


def test_runs_by_job_and_status(lane):
    first, instance = lane["first"], lane["instance"]
    assert _family(first, "ai_pipeline_runs_total") == {
        frozenset({"dagster_job": "daily_pipeline", "status": "success"}.items()): DAYS,
        frozenset({"dagster_job": "daily_pipeline", "status": "failure"}.items()): 1,
        frozenset({"dagster_job": "daily_pipeline", "status": "canceled"}.items()): 0,
        frozenset({"dagster_job": "document_collections", "status": "success"}.items()): 1,
        frozenset({"dagster_job": "document_collections", "status": "failure"}.items()): 0,
        frozenset({"dagster_job": "document_collections", "status": "canceled"}.items()): 0,
    }
    records = [r for r in instance.get_run_records() if r.dagster_run.run_id != lane["again"].run_id]
    for job, status, dagster_status in (
        ("daily_pipeline", "success", dg.DagsterRunStatus.SUCCESS),
        ("daily_pipeline", "failure", dg.DagsterRunStatus.FAILURE),
        ("document_collections", "success", dg.DagsterRunStatus.SUCCESS),
    ):
        runs = [r for r in records if r.dagster_run.job_name == job and r.dagster_run.status == dagster_status]
        labels = {"dagster_job": job, "status": status}
        assert _get(first, "ai_pipeline_run_duration_seconds_count", **labels) == len(runs)
        durations = sum(r.end_time - r.start_time for r in runs)
        assert _get(first, "ai_pipeline_run_duration_seconds_sum", **labels) == pytest.approx(durations, rel=1e-9)
        newest = max(r.end_time for r in runs)
        assert _get(first, "ai_pipeline_run_last_finished_timestamp_seconds", **labels) == pytest.approx(newest)


def test_records_processed_per_asset(lane):
    expected = Counter()
    for result in lane["results"]:
        for event in result.get_asset_materialization_events():
            expected[event.asset_key.to_user_string()] += event.materialization.metadata["dagster/row_count"].value
    scraped = {
        dict(labels)["asset"]: value
        for labels, value in _family(lane["first"], "ai_pipeline_records_processed_total").items()
    }
    assert scraped == dict(expected)
    assert set(scraped) == {
        *FEATURE_ASSETS,
        keys.RAW_DOCUMENTS,
        keys.DOCUMENT_CHUNKS,
        keys.CHUNK_EMBEDDINGS,
        keys.VECTOR_COLLECTION,
    }
    assert scraped[keys.DOCUMENT_CHUNKS] == 3


def test_quality_scores_are_the_newest_evaluation_of_each_check(lane):
    expected = {}
    for result in lane["results"]:  # run one after another: the last evaluation of a check is its newest
        for e in result.get_asset_check_evaluations():
            partition = COLLECTION if e.partition == COLLECTION else ""
            expected[(e.asset_key.to_user_string(), e.check_name, partition)] = (e.severity.value.lower(), e.passed)
    scraped = {}
    for labels, value in _family(lane["first"], "ai_pipeline_data_quality_score").items():
        d = dict(labels)
        scraped[(d["asset"], d["check"], d.get("partition", ""))] = (d["check_severity"], value == 1)
        assert value in (0, 1)
    assert scraped == expected
    assert scraped[(keys.USER_WINDOW_FEATURES, keys.DRIFT_CHECK, "")][1] is False  # the busy last day
    assert scraped[(keys.USER_DAILY_AGGREGATES, keys.PARTIALS_CHECK, "")] == ("error", True)
    assert scraped[(keys.VECTOR_COLLECTION, keys.GATE_CHECK, COLLECTION)] == ("error", True)


def test_drift_and_check_values_come_from_the_newest_evaluations(lane):
    first = lane["first"]
    newest = lane["results"][DAYS - 1]
    drift = next(e for e in newest.get_asset_check_evaluations() if e.check_name == keys.DRIFT_CHECK)
    psi = {k.removeprefix("psi/"): v.value for k, v in drift.metadata.items() if k.startswith("psi/")}
    scraped = {dict(labels)["feature"]: v for labels, v in _family(first, "ai_pipeline_feature_drift_psi").items()}
    assert scraped == psi
    assert max(scraped.values()) > 0.1 and "event_count_7d" in scraped

    nulls = next(e for e in newest.get_asset_check_evaluations() if e.check_name == keys.NULLS_CHECK)
    for key, value in nulls.metadata.items():
        labels = {"asset": keys.USER_WINDOW_FEATURES, "check": keys.NULLS_CHECK, "key": key}
        assert _get(first, "ai_pipeline_check_value", **labels) == value.value
    gate = {"asset": keys.VECTOR_COLLECTION, "check": keys.GATE_CHECK, "partition": COLLECTION}
    assert _get(first, "ai_pipeline_check_value", **gate, key="recall_at_5") == 1.0
    assert _get(first, "ai_pipeline_check_value", **gate, key="questions") == 2


def test_search_latency_histogram_holds_every_search_of_the_gate(lane):
    first = lane["first"]
    gate = next(e for e in lane["results"][-1].get_asset_check_evaluations() if e.check_name == keys.GATE_CHECK)
    seconds = [ms / 1000 for ms in gate.metadata["search_latencies_ms"].value]
    assert len(seconds) == len(GOLDEN["questions"])
    assert gate.metadata["search_p99_ms"].value == pytest.approx(
        max(seconds) * 1000 - 0.01 * (max(seconds) - min(seconds)) * 1000, abs=2e-3
    )
    name = "ai_pipeline_vector_search_latency_seconds"
    assert _get(first, f"{name}_count", collection=COLLECTION) == 2
    assert _get(first, f"{name}_sum", collection=COLLECTION) == pytest.approx(sum(seconds), rel=1e-9)
    for le in metrics.SEARCH_LATENCY_BUCKETS:
        expected = sum(1 for s in seconds if s <= le)
        assert _get(first, f"{name}_bucket", collection=COLLECTION, le=str(float(le))) == expected, le


def test_freshness_lags_are_measured_at_scrape_time(lane):
    first, instance = lane["first"], lane["instance"]
    before, after = lane["scraped_between"]
    for asset in [*FEATURE_ASSETS, keys.VECTOR_COLLECTION]:
        newest = instance.get_latest_materialization_event(dg.AssetKey(asset)).timestamp
        partition = COLLECTION if asset == keys.VECTOR_COLLECTION else ""
        labels = {"asset": asset} | ({"partition": partition} if partition else {})
        lag = _get(first, "ai_pipeline_asset_freshness_lag_seconds", **labels)
        assert before - newest <= lag <= after - newest, asset
    end_of_newest_day = datetime(2024, 3, 1 + DAYS, tzinfo=UTC).timestamp()  # the end of START + 7
    partition_lags = _family(first, "ai_pipeline_asset_partition_lag_seconds")
    assert {dict(labels)["asset"] for labels in partition_lags} == set(FEATURE_ASSETS)
    for value in partition_lags.values():
        assert before - end_of_newest_day <= value <= after - end_of_newest_day


def test_a_scrape_adds_only_what_finished_since_the_last(lane):
    first, second = lane["first"], lane["second"]
    failure = {"dagster_job": "daily_pipeline", "status": "failure"}
    assert _get(second, "ai_pipeline_runs_total", **failure) == 2
    assert _get(second, "ai_pipeline_run_duration_seconds_count", **failure) == 2
    unchanged = ("ai_pipeline_records_processed_total", "ai_pipeline_vector_search_latency_seconds_count")
    for name in unchanged:
        assert _family(second, name) == _family(first, name), name
    assert _family(second, "ai_pipeline_data_quality_score") == _family(first, "ai_pipeline_data_quality_score")


def test_a_restarted_exporter_rebuilds_the_same_values_from_the_log(lane):
    server, thread = monitoring.serve(lane["instance"], port=0)
    try:
        restarted, _ = _scrape(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)

    def durable(samples: Samples) -> Samples:
        return {key: value for key, value in samples.items() if "lag_seconds" not in key[0]}

    assert durable(restarted) == durable(lane["second"])


def test_a_malformed_record_is_logged_and_skipped_not_fatal(tmp_path, caplog):
    @dg.asset
    def answers() -> int:
        return 1

    @dg.asset_check(asset=answers)
    def timed_search() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True, metadata={"search_latencies_ms": "fast", "questions": 3})

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert dg.materialize([answers, timed_search], instance=instance).success
        collector = monitoring.EventLogCollector(instance)
        registry = CollectorRegistry()
        registry.register(collector)
        assert collector.poll() == 1
        assert collector.poll() == 0  # nothing new
        job = {"dagster_job": "__ephemeral_asset_job__"}
        assert _value(registry, "ai_pipeline_runs_total", **job, status="success") == 1
        check = {"asset": "answers", "check": "timed_search", "partition": ""}
        assert _value(registry, "ai_pipeline_data_quality_score", **check, check_severity="error") is None
        assert "check timed_search of answers (partition None): metadata search_latencies_ms" in caplog.text
        assert dg.materialize([answers], instance=instance).success
        assert _value(registry, "ai_pipeline_runs_total", **job, status="success") == 2  # later scrapes go on


@pytest.mark.postgres
def _warehouse_rows(settings: Settings, table: str) -> int:
    with duckdb.connect(str(settings.warehouse), read_only=True) as conn:
        return conn.execute(f"select count(*) from main.{table}").fetchone()[0]


def test_exporter_on_a_postgres_instance(tmp_path, postgres_instance):
    settings = Settings(home=tmp_path, start_date=START)
    _validated_events(settings, 3)
    defs = build_defs(settings)
    with dg.DagsterInstance.from_config(str(prepare_instance_home(settings, "postgres"))) as instance:
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        ran = [_daily(defs, instance, START, [keys.USER_DAILY_AGGREGATES])]
        assert ran[0].success
        _failing_run(defs, instance)
        with _exporter(settings.home, postgres=True) as url:
            first, _ = _scrape(url)
            # A backfill range: its two materializations share the range's metadata, and its rows count once.
            ran.append(
                _daily(
                    defs, instance, START + timedelta(days=1), [keys.USER_DAILY_AGGREGATES], START + timedelta(days=2)
                )
            )
            second, _ = _scrape(url)
    assert len(ran[1].get_asset_materialization_events()) == 2
    rows = [r.get_asset_materialization_events()[0].materialization.metadata["dagster/row_count"].value for r in ran]
    assert rows[1] == _warehouse_rows(settings, keys.USER_DAILY_AGGREGATES) - rows[0]
    success = {"dagster_job": "daily_pipeline", "status": "success"}
    assert _get(first, "ai_pipeline_runs_total", **success) == 1
    assert _get(first, "ai_pipeline_runs_total", dagster_job="daily_pipeline", status="failure") == 1
    assert _get(first, "ai_pipeline_records_processed_total", asset=keys.USER_DAILY_AGGREGATES) == rows[0]
    assert _get(second, "ai_pipeline_runs_total", **success) == 2
    assert _get(second, "ai_pipeline_records_processed_total", asset=keys.USER_DAILY_AGGREGATES) == sum(rows)
    conservation = {"asset": keys.USER_DAILY_AGGREGATES, "check": keys.PARTIALS_CHECK}
    assert _get(second, "ai_pipeline_data_quality_score", **conservation, check_severity="error") == 1


# --- Prometheus configuration and the Grafana dashboard --------------------------------------------------------------


def _promtool(*args: str) -> subprocess.CompletedProcess:
    require(shutil.which("promtool") is not None, "promtool is not installed (Debian package prometheus)")
    return subprocess.run(["promtool", *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True, timeout=120)


def test_prometheus_config_and_rules_are_valid():
    config = _promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    rules = _promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 6 rules found" in rules.stdout


def test_every_alert_has_a_firing_and_a_quiet_rule_test():
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    rules = re.findall(r"^\s+- alert: (\w+)$", (DEPLOY / "prometheus" / "alerts.yml").read_text(), re.M)
    tests = (DEPLOY / "prometheus" / "alerts_test.yml").read_text()
    for alert in rules:
        cases = re.findall(rf"alertname: {alert}\n\s+exp_alerts:(.*)", tests)
        assert any(c.strip() == "[]" for c in cases) and any(c.strip() == "" for c in cases), alert


def _names(text: str) -> set[str]:
    return set(re.findall(r"\bai_pipeline_[a-z0-9_]+", text))


def test_dashboard_and_alerts_use_only_exported_metrics(lane):
    exported = {name for name, _ in lane["first"]}
    families = {f.name for f in text_string_to_metric_families(lane["text"]) if not f.name.endswith("_created")}
    dashboard = json.loads((DEPLOY / "grafana" / "ai_pipeline.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = _names("\n".join(exprs))
    assert used <= exported, used - exported
    # Every exported family has a panel.
    assert {f for f in families if any(u == f or u.startswith(f + "_") for u in used)} == families
    assert _names((DEPLOY / "prometheus" / "alerts.yml").read_text()) <= exported
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
