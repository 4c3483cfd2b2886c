"""`failure_alerts`: every failed ERROR check and failed run is posted to a webhook (`ai_pipeline.lib.ops.alerts`),
read from the instance's event log, at least once, in order."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime

import dagster as dg

from ai_pipeline.defs.keys import (
    ALERTS_SENSOR,
)
from ai_pipeline.defs.resources import AlertWebhook
from ai_pipeline.event_log import RUN_FINISHED, plain_metadata, root_error, run_partition
from ai_pipeline.lib.ops import alerts

# Finished runs examined per alerting tick; the rest wait for the next tick (the cursor says where it stopped).
ALERT_BATCH = 25


def run_alerts(instance: dg.DagsterInstance, finished: dg.EventLogRecord, ui_url: str) -> list[alerts.Alert]:
    """The alerts of one finished run: each failed ERROR check evaluation in it, then the run's failure if it failed."""
    entry = finished.event_log_entry
    run_id = entry.run_id
    run = instance.get_run_by_id(run_id)
    partition = run_partition(run)
    common = {"run_id": run_id, "job_name": entry.job_name or "", "run_url": alerts.run_url(ui_url, run_id)}
    out, failed_steps = [], []
    records = instance.get_records_for_run(
        run_id, of_type={dg.DagsterEventType.ASSET_CHECK_EVALUATION, dg.DagsterEventType.STEP_FAILURE}
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            failed_steps.append({"step": event.step_key, "error": root_error(event.event_specific_data.error)})
            continue
        evaluation = event.event_specific_data
        if evaluation.passed or evaluation.severity != dg.AssetCheckSeverity.ERROR:
            continue
        out.append(
            alerts.Alert(
                alert_id=f"{run_id}:check:{record.storage_id}",
                kind=alerts.CHECK_FAILED,
                occurred_at=datetime.fromtimestamp(record.event_log_entry.timestamp, UTC),
                description=evaluation.description or "",
                asset_key=evaluation.asset_key.to_user_string(),
                asset_url=alerts.asset_url(ui_url, list(evaluation.asset_key.path)),
                partition=evaluation.partition or partition,
                check_name=evaluation.check_name,
                severity=evaluation.severity.value,
                metadata={
                    **plain_metadata(evaluation.metadata),
                    "blocking": bool(evaluation.blocking),
                },
                **common,
            )
        )
    if entry.dagster_event_type == dg.DagsterEventType.RUN_FAILURE:
        message = entry.dagster_event.message or entry.user_message
        out.append(
            alerts.Alert(
                alert_id=f"{run_id}:run_failed",
                kind=alerts.RUN_FAILED,
                occurred_at=datetime.fromtimestamp(entry.timestamp, UTC),
                description=failed_steps[0]["error"] if failed_steps else message,
                partition=partition,
                metadata={
                    "run_failure": message,
                    "failed_steps": failed_steps,
                    "assets": sorted(k.to_user_string() for k in (run.asset_selection or ())) if run else [],
                },
                **common,
            )
        )
    return out


def finished_runs(instance: dg.DagsterInstance, after: int | None, limit: int) -> list[dg.EventLogRecord]:
    """Run-finished events (success, failure, cancellation) after storage id `after`, oldest first, gap-free:
    when a type has more than `limit`, nothing past its last returned record is taken from the others."""
    batches = [
        instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(event_type, after_storage_id=after), limit=limit, ascending=True
        )
        for event_type in RUN_FINISHED
    ]
    bound = min((b.records[-1].storage_id for b in batches if b.has_more), default=None)
    records = sorted((r for b in batches for r in b.records), key=lambda r: r.storage_id)
    return [r for r in records if bound is None or r.storage_id <= bound][:limit]


def _latest_finished(instance: dg.DagsterInstance) -> int | None:
    latest = [
        instance.fetch_run_status_changes(dg.RunStatusChangeRecordsFilter(event_type), limit=1).records
        for event_type in RUN_FINISHED
    ]
    return max((r[0].storage_id for r in latest if r), default=None)


def failure_alerts_sensor(webhook: AlertWebhook, interval_s: int) -> dg.SensorDefinition:
    """Posts every failed ERROR check and failed run, in event-log order, at least once.

    Cursor: `{"after": storage id of the last run-finished event fully alerted, "delivered": [alert ids already
    posted for the next run]}`. Alerts are posted one by one; the cursor never moves past one that was not
    accepted, which is retried on the next tick. A tick that cannot deliver anything fails (red in the UI) with
    the webhook's answer; one that delivered some alerts first keeps them and reports the failure.
    A run's alerts are posted when the run has finished. While no webhook is set the cursor follows the log, so
    setting one later does not post the history.
    """

    @dg.sensor(
        name=ALERTS_SENSOR,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Posts failed ERROR asset checks and failed runs to the webhook in "
        "AI_PIPELINE_ALERT_WEBHOOK_URL, with the asset, partition, check, metadata and a link to the run.",
        metadata={"configured": bool(webhook.url)},
    )
    def failure_alerts(context: dg.SensorEvaluationContext, alert_webhook: AlertWebhook) -> dg.SensorResult:
        if not alert_webhook.url:
            return _alert_result(
                _latest_finished(context.instance),
                [],
                "AI_PIPELINE_ALERT_WEBHOOK_URL is not set: failures are not posted",
            )
        state = json.loads(context.cursor) if context.cursor else {"after": None, "delivered": []}
        after, delivered, sent = state["after"], set(state["delivered"]), 0
        for finished in finished_runs(context.instance, after, ALERT_BATCH):
            for alert in run_alerts(context.instance, finished, alert_webhook.ui_url):
                if alert.alert_id in delivered:
                    continue
                try:
                    alert_webhook.post(alert)
                except alerts.DeliveryError as error:
                    if not sent:
                        raise
                    context.log.error(f"{error}; it and the alerts after it are retried on the next tick")
                    return _alert_result(after, delivered, f"{sent} alerts posted, then: {error}")
                context.log.info(f"posted {alert.kind} {alert.alert_id}: {alert.summary}")
                delivered.add(alert.alert_id)
                sent += 1
            after, delivered = finished.storage_id, set()
        return _alert_result(after, delivered, f"{sent} alerts posted" if sent else "no new failures")

    return failure_alerts


def _alert_result(after: int | None, delivered: Iterable[str], reason: str) -> dg.SensorResult:
    return dg.SensorResult(cursor=json.dumps({"after": after, "delivered": sorted(delivered)}), skip_reason=reason)
