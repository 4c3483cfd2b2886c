"""Prometheus metrics of the pipeline, from plain records of finished runs, materializations and check evaluations.

`ai_pipeline.monitoring` reads Dagster's run storage and event log and hands each record to `PipelineMetrics`;
this module alone decides what every metric means (docs/monitoring.md lists them):

- Counters and histograms add up every record once, in any order: runs, run durations, records processed,
  search latencies.
- Gauges hold the newest record by timestamp (a record older than the one held is ignored, so runs that
  overlap or are read out of order cannot roll a gauge back): check scores and values, drift, freshness.
- Time partitions (keys starting with a date) are successive versions of one asset: the newest wins and the
  series carry no partition. Other partitions (document collections) are entities of their own: their series
  carry `partition`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

RUN_STATUSES = ("success", "failure", "canceled")
ROW_COUNT = "dagster/row_count"  # Dagster's standard row count metadata, emitted by every asset of the project
DRIFT_PREFIX = "psi/"  # `psi/<feature>` in a drift check's metadata
SEARCH_LATENCIES = "search_latencies_ms"  # per-query latencies (a list, milliseconds) in a retrieval check
RUN_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
SEARCH_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_TIME_PARTITION = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class FinishedRun:
    run_id: str
    job: str
    status: str  # one of RUN_STATUSES
    finished_at: float  # unix seconds
    duration: float | None  # seconds from start to end; None when the run never started (failed in the queue)


@dataclass(frozen=True)
class Materialization:
    asset: str
    partition: str | None
    timestamp: float
    metadata: Mapping[str, object]  # plain values (numbers, strings, lists, dicts)


@dataclass(frozen=True)
class CheckEvaluation:
    asset: str
    check: str
    partition: str | None
    passed: bool
    severity: str  # "warn" or "error": how the check reported its result
    timestamp: float
    metadata: Mapping[str, object]


def partition_label(partition: str | None) -> str:
    """The `partition` label of a series: empty for unpartitioned and time-partitioned assets, else the key."""
    if partition is None or _TIME_PARTITION.match(partition):
        return ""
    return partition


def partition_end(partition: str | None) -> float | None:
    """The end (next midnight UTC, unix seconds) of a daily partition; None for any other key."""
    if partition is None or not _TIME_PARTITION.fullmatch(partition):
        return None
    day = date.fromisoformat(partition) + timedelta(days=1)
    return datetime.combine(day, time(), tzinfo=UTC).timestamp()


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def drift_scores(metadata: Mapping[str, object]) -> dict[str, float]:
    """feature -> PSI from `psi/<feature>` metadata entries."""
    return {
        key.removeprefix(DRIFT_PREFIX): float(value)
        for key, value in metadata.items()
        if key.startswith(DRIFT_PREFIX) and is_number(value)
    }


def check_values(metadata: Mapping[str, object]) -> dict[str, float]:
    """Every numeric metadata entry of a check (rates, counts, recall, latency percentiles) but the drift scores,
    which have their own metric."""
    return {
        key: float(value) for key, value in metadata.items() if is_number(value) and not key.startswith(DRIFT_PREFIX)
    }


def search_latencies(metadata: Mapping[str, object], where: str) -> list[float]:
    """Seconds, from the milliseconds of `search_latencies_ms`; `where` names the evaluation in errors."""
    values = metadata.get(SEARCH_LATENCIES, [])
    if not isinstance(values, list) or not all(is_number(v) and math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"{where}: metadata {SEARCH_LATENCIES} must be a list of milliseconds, got {values!r}")
    return [v / 1000 for v in values]


class PipelineMetrics:
    """The pipeline's metrics, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry):
        def metric(kind, name: str, text: str, labels: list[str], **kwargs):
            return kind(f"ai_pipeline_{name}", text, labels, registry=registry, **kwargs)

        self.runs = metric(Counter, "runs", "Finished Dagster runs by job and final status.", ["dagster_job", "status"])
        self.run_duration = metric(
            Histogram,
            "run_duration_seconds",
            "Duration of finished runs, start to end.",
            ["dagster_job", "status"],
            buckets=RUN_DURATION_BUCKETS,
        )
        self.run_last_finished = metric(
            Gauge,
            "run_last_finished_timestamp_seconds",
            "When the newest run of a job with this final status finished (unix seconds).",
            ["dagster_job", "status"],
        )
        self.records = metric(
            Counter,
            "records_processed",
            "Records written by each asset (a stage of the pipeline): the sum of its materializations' "
            "dagster/row_count; a re-run of a partition counts again.",
            ["asset"],
        )
        self.quality = metric(
            Gauge,
            "data_quality_score",
            "1 if the newest evaluation of an asset check passed, 0 if it failed; check_severity is the severity "
            "the check reported (warn or error).",
            ["asset", "check", "partition", "check_severity"],
        )
        self.check_value = metric(
            Gauge,
            "check_value",
            "Numeric metadata of the newest evaluation of an asset check (rates, counts, recall, latencies).",
            ["asset", "check", "partition", "key"],
        )
        self.drift = metric(
            Gauge,
            "feature_drift_psi",
            "Population stability index of a feature against its reference, from the newest drift check.",
            ["asset", "partition", "feature"],
        )
        self.search_latency = metric(
            Histogram,
            "vector_search_latency_seconds",
            "Latency of each vector search the retrieval checks ran.",
            ["collection"],
            buckets=SEARCH_LATENCY_BUCKETS,
        )
        self.freshness = metric(
            Gauge,
            "asset_freshness_lag_seconds",
            "Seconds since the newest materialization of an asset (of any partition).",
            ["asset", "partition"],
        )
        self.partition_lag = metric(
            Gauge,
            "asset_partition_lag_seconds",
            "Seconds since the end of the newest materialized daily partition of an asset (backfilling an old "
            "day does not lower it).",
            ["asset"],
        )
        self._checks: dict[tuple[str, str, str], tuple[float, CheckEvaluation]] = {}
        self._materialized: dict[tuple[str, str], float] = {}
        self._newest_day: dict[str, float] = {}
        self._last_finished: dict[tuple[str, str], float] = {}

    def add_run(self, run: FinishedRun) -> None:
        if run.status not in RUN_STATUSES:
            raise ValueError(f"run {run.run_id}: status {run.status!r} is not one of {RUN_STATUSES}")
        for status in RUN_STATUSES:  # every status of a job is exported from its first run on, at 0 until it occurs
            self.runs.labels(run.job, status)
        self.runs.labels(run.job, run.status).inc()
        if run.duration is not None:
            self.run_duration.labels(run.job, run.status).observe(run.duration)
        key = (run.job, run.status)
        if run.finished_at >= self._last_finished.get(key, -math.inf):
            self._last_finished[key] = run.finished_at
            self.run_last_finished.labels(*key).set(run.finished_at)

    def add_materialization(self, event: Materialization) -> None:
        rows = event.metadata.get(ROW_COUNT)
        if is_number(rows):
            self.records.labels(event.asset).inc(rows)
        key = (event.asset, partition_label(event.partition))
        self._materialized[key] = max(event.timestamp, self._materialized.get(key, -math.inf))
        end = partition_end(event.partition)
        if end is not None:
            self._newest_day[event.asset] = max(end, self._newest_day.get(event.asset, -math.inf))

    def add_check(self, evaluation: CheckEvaluation) -> None:
        """Raises ValueError, before changing any metric, when the evaluation's metadata is malformed."""
        partition = partition_label(evaluation.partition)
        where = f"check {evaluation.check} of {evaluation.asset} (partition {evaluation.partition})"
        latencies = search_latencies(evaluation.metadata, where) if SEARCH_LATENCIES in evaluation.metadata else []
        for seconds in latencies:
            self.search_latency.labels(partition).observe(seconds)
        key = (evaluation.asset, evaluation.check, partition)
        held = self._checks.get(key)
        if held and held[0] > evaluation.timestamp:
            return
        if held:
            self._remove_check_series(held[1])
        self._checks[key] = (evaluation.timestamp, evaluation)
        severity = evaluation.severity.lower()
        self.quality.labels(*key, severity).set(1 if evaluation.passed else 0)
        for name, value in check_values(evaluation.metadata).items():
            self.check_value.labels(*key, name).set(value)
        for feature, score in drift_scores(evaluation.metadata).items():
            self.drift.labels(evaluation.asset, partition, feature).set(score)

    def _remove_check_series(self, old: CheckEvaluation) -> None:
        """Drops the series of the evaluation a newer one replaces (its severity or keys may differ)."""
        key = (old.asset, old.check, partition_label(old.partition))
        self.quality.remove(*key, old.severity.lower())
        for name in check_values(old.metadata):
            self.check_value.remove(*key, name)
        for feature in drift_scores(old.metadata):
            self.drift.remove(old.asset, key[2], feature)

    def refresh(self, now: float) -> None:
        """Sets the lags as of `now` (unix seconds); called before each scrape."""
        for (asset, partition), newest in self._materialized.items():
            self.freshness.labels(asset, partition).set(now - newest)
        for asset, end in self._newest_day.items():
            self.partition_lag.labels(asset).set(now - end)
