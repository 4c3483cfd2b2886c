"""Prometheus exporter fed by Dagster's event log: `ai-pipeline metrics` serves /metrics on 127.0.0.1:9108.

The unit of reading is a finished run. A cursor per final status (storage ids of the run-status events, which
every instance storage indexes globally) finds the runs that finished since the last read; each one's
materializations and check evaluations are then read from its own log, so a scrape reads only what is new.
At start the cursors are empty and the whole log is read once: counters are rebuilt from the log, so they
keep their values across restarts. What the records mean is decided in `ai_pipeline.lib.ops.metrics`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

import dagster as dg
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric

from ai_pipeline.event_log import RUN_FINISHED, plain_metadata
from ai_pipeline.lib.ops import metrics

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9108
PAGE_SIZE = 200  # finished runs read per query
RUN_EVENTS = {dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_CHECK_EVALUATION}
log = logging.getLogger(__name__)


def run_records(instance: dg.DagsterInstance, run_id: str) -> list[metrics.Materialization | metrics.CheckEvaluation]:
    """The materializations and check evaluations in one run's log, as plain records.

    A backfill run's materializations of one asset (one per day of its range) share the range's metadata: its row
    count stays with the first of them only, so that the records processed are counted once.
    """
    found: list[metrics.Materialization | metrics.CheckEvaluation] = []
    counted: set[str] = set()
    for record in instance.get_records_for_run(run_id, of_type=RUN_EVENTS).records:
        entry = record.event_log_entry
        if entry.asset_materialization is not None:
            event = entry.asset_materialization
            asset = event.asset_key.to_user_string()
            metadata = plain_metadata(event.metadata)
            if asset in counted:
                metadata.pop(metrics.ROW_COUNT, None)
            counted.add(asset)
            found.append(
                metrics.Materialization(
                    asset=asset, partition=event.partition, timestamp=entry.timestamp, metadata=metadata
                )
            )
        else:
            evaluation = entry.dagster_event.asset_check_evaluation_data
            found.append(
                metrics.CheckEvaluation(
                    asset=evaluation.asset_key.to_user_string(),
                    check=evaluation.check_name,
                    partition=evaluation.partition,
                    passed=evaluation.passed,
                    severity=evaluation.severity.value,
                    timestamp=entry.timestamp,
                    metadata=plain_metadata(evaluation.metadata),
                )
            )
    return found


class EventLogCollector:
    """A prometheus_client collector: each collect() first reads the runs finished since the previous one."""

    def __init__(self, instance: dg.DagsterInstance, page_size: int = PAGE_SIZE):
        self._instance = instance
        self._page_size = page_size
        self._registry = CollectorRegistry()
        self.metrics = metrics.PipelineMetrics(self._registry)
        self._cursors: dict[dg.DagsterEventType, str | None] = dict.fromkeys(RUN_FINISHED)
        self._lock = threading.RLock()  # scrapes may overlap; poll() and refresh() change shared state

    def poll(self) -> int:
        """Adds the runs that finished since the last poll; returns how many. A page of runs is read whole
        before any of it is counted, and its cursor advances after: a failed read is retried, never half counted.
        """
        added = 0
        with self._lock:
            for event_type, status in RUN_FINISHED.items():
                while True:
                    page = self._instance.fetch_run_status_changes(
                        event_type, limit=self._page_size, cursor=self._cursors[event_type], ascending=True
                    )
                    finished = self._read(page.records, status)
                    for run, events in finished:
                        self.metrics.add_run(run)
                        for event in events:
                            self._add(run, event)
                    self._cursors[event_type] = page.cursor
                    added += len(finished)
                    if not page.has_more:
                        break
        return added

    def _add(self, run: metrics.FinishedRun, event: metrics.Materialization | metrics.CheckEvaluation) -> None:
        """One malformed record is logged and skipped: it must not stop every later scrape."""
        try:
            if isinstance(event, metrics.Materialization):
                self.metrics.add_materialization(event)
            else:
                self.metrics.add_check(event)
        except ValueError as error:
            log.warning("run %s of %s: %s (record skipped)", run.run_id, run.job, error)

    def _read(self, status_records, status: str) -> list[tuple[metrics.FinishedRun, list]]:
        run_ids = [r.event_log_entry.run_id for r in status_records]
        if not run_ids:
            return []
        by_id = {r.dagster_run.run_id: r for r in self._instance.get_run_records(dg.RunsFilter(run_ids=run_ids))}
        finished = []
        for status_record in status_records:
            entry = status_record.event_log_entry
            record = by_id.get(entry.run_id)
            if record is None:  # the run was deleted since; its events went with it
                continue
            started, ended = record.start_time, record.end_time or entry.timestamp
            run = metrics.FinishedRun(
                run_id=entry.run_id,
                job=record.dagster_run.job_name,
                status=status,
                finished_at=ended,
                duration=ended - started if started is not None else None,
            )
            finished.append((run, run_records(self._instance, entry.run_id)))
        return finished

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self.poll()
            self.metrics.refresh(time.time())
        yield from self._registry.collect()


def serve(
    instance: dg.DagsterInstance, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> tuple[WSGIServer, threading.Thread]:
    """Reads the whole log once, then serves /metrics from a daemon thread (port 0 picks a free port)."""
    collector = EventLogCollector(instance)
    collector.poll()
    registry = CollectorRegistry()
    registry.register(collector)
    return start_http_server(port, addr=host, registry=registry)
