"""Reading the Dagster instance's event log, shared by the alerting sensor, the Prometheus exporter and the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

# The events that end a run, and the status each one gives it.
RUN_FINISHED = {
    dg.DagsterEventType.RUN_SUCCESS: "success",
    dg.DagsterEventType.RUN_FAILURE: "failure",
    dg.DagsterEventType.RUN_CANCELED: "canceled",
}


def latest_materialization(instance: dg.DagsterInstance, asset: str, partition: str) -> dg.EventLogRecord | None:
    """The newest materialization of one partition of an asset, or None."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1, ascending=False
    ).records
    return records[0] if records else None


def plain_value(value: dg.MetadataValue) -> object:
    """A metadata value as plain data: tables as lists of rows, schemas as {column: type}, asset keys as strings."""
    if isinstance(value, dg.TableMetadataValue):
        return [record.data for record in value.records]
    if isinstance(value, dg.TableSchemaMetadataValue):
        return {column.name: column.type for column in value.schema.columns}
    if isinstance(value.value, dg.AssetKey):
        return value.value.to_user_string()
    return value.value


def plain_metadata(metadata: Mapping[str, dg.MetadataValue]) -> dict[str, object]:
    return {key: plain_value(value) for key, value in metadata.items()}


def root_error(error: Any) -> str:
    """The innermost cause of a step's SerializableErrorInfo: the user's exception, not the wrapping step error."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def run_partition(run: dg.DagsterRun | None) -> str | None:
    """A run's partition, or its range as `start...end`."""
    if run is None:
        return None
    if "dagster/partition" in run.tags:
        return run.tags["dagster/partition"]
    start, end = run.tags.get("dagster/asset_partition_range_start"), run.tags.get("dagster/asset_partition_range_end")
    return f"{start}...{end}" if start and end else None
