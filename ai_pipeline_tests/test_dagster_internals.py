"""What the project relies on from Dagster's private API (`ai_pipeline/defs/dagster_internals.py`), pinned: a Dagster
upgrade that changes it fails here, not somewhere in a daily run."""

from datetime import date

import dagster as dg
import duckdb
import polars as pl

from ai_pipeline.defs.policy import daily_asset, partition_days
from ai_pipeline.defs.reporting import DayChecks
from ai_pipeline.defs.resources import WarehouseIOManager
from ai_pipeline.lib.quality import Verdict

PARTITIONS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-04")


def test_a_range_runs_check_evaluations_name_their_day_and_the_materialization_they_judged():
    @daily_asset(
        "judged",
        partitions_def=PARTITIONS,
        check_specs=[dg.AssetCheckSpec("positive", asset="judged", partitions_def=PARTITIONS, blocking=True)],
    )
    def judged(context: dg.AssetExecutionContext):
        yield dg.MaterializeResult(asset_key="judged")
        per_day = DayChecks(context)
        for day in partition_days(context):
            verdict = Verdict(day != date(2024, 1, 2), "WARN", f"{day}")
            yield from per_day.results(day, verdict, {"day": day.day}, asset_key="judged", check_name="positive")

    with dg.instance_for_test() as instance:
        tags = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-01-03"}
        result = dg.materialize([judged], instance=instance, tags=tags)
        assert result.success
        records = instance.fetch_materializations(dg.AssetKey("judged"), limit=10).records
        stored = {r.partition_key: r.storage_id for r in records}
        evaluations = sorted(result.get_asset_check_evaluations(), key=lambda e: e.partition)
        assert [(e.partition, e.passed) for e in evaluations] == [
            ("2024-01-01", True),
            ("2024-01-02", False),
            ("2024-01-03", True),
        ]
        assert [e.target_materialization_data.storage_id for e in evaluations] == [
            stored["2024-01-01"],
            stored["2024-01-02"],
            stored["2024-01-03"],
        ]
        assert {e.target_materialization_data.run_id for e in evaluations} == {result.run_id}
        # The instance keeps each day's result against the check, as the UI's check history reads it.
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("judged"), "positive")]
        )
        assert latest and next(iter(latest.values())).run_id == result.run_id


def test_the_warehouse_creates_the_table_of_an_empty_frame(tmp_path):
    @dg.asset(partitions_def=PARTITIONS, metadata={"partition_expr": "partition_date"})
    def empty() -> pl.DataFrame:
        return pl.DataFrame(schema={"partition_date": pl.Date, "value": pl.Int64})

    database = tmp_path / "warehouse.duckdb"
    result = dg.materialize(
        [empty],
        partition_key="2024-01-01",
        resources={"io_manager": WarehouseIOManager(database=str(database), schema="main")},
    )
    assert result.success
    with duckdb.connect(str(database), read_only=True) as conn:
        columns = conn.execute(
            "select column_name, data_type from information_schema.columns where table_name = 'empty'"
        )
        assert columns.fetchall() == [("partition_date", "DATE"), ("value", "BIGINT")]
        assert conn.execute("select count(*) from main.empty").fetchone() == (0,)
