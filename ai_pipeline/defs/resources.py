"""The warehouse: one DuckDB file, written through the Polars IO manager, read by checks."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
import polars.selectors as cs
from dagster._core.storage.db_io_manager import DbTypeHandler, TableSlice
from dagster_duckdb import DuckDBIOManager, DuckDBResource
from dagster_duckdb_polars import DuckDBPolarsTypeHandler

from ai_pipeline.settings import Settings


class _CreatingPolarsTypeHandler(DuckDBPolarsTypeHandler):
    """Also creates the table for an empty frame, so a source with nothing today still has a table."""

    def handle_output(self, context, table_slice: TableSlice, obj: pl.DataFrame, connection) -> None:
        if not obj.is_empty():
            super().handle_output(context, table_slice, obj, connection)
            return
        empty = obj.to_arrow()  # noqa: F841  (read by name in the SQL below)
        table = f"{table_slice.schema}.{table_slice.table}"
        connection.execute(f"create schema if not exists {table_slice.schema}")
        connection.execute(f"create table if not exists {table} as select * from empty")
        context.add_output_metadata({"row_count": 0})


class WarehouseIOManager(DuckDBIOManager):
    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [_CreatingPolarsTypeHandler()]

    @staticmethod
    def default_load_type() -> type:
        return pl.DataFrame


def warehouse_resources(settings: Settings) -> dict:
    settings.warehouse.parent.mkdir(parents=True, exist_ok=True)
    database = str(settings.warehouse)
    return {
        "io_manager": WarehouseIOManager(database=database, schema="main"),
        "warehouse": DuckDBResource(database=database),
    }


def query(warehouse: DuckDBResource, sql: str, params: list) -> pl.DataFrame:
    """A query's result, timestamps in UTC (DuckDB names the zone after its session, e.g. Etc/UTC)."""
    with warehouse.get_connection() as conn:
        frame = conn.execute(sql, params).pl()
    return frame.with_columns(cs.datetime(time_zone="*").dt.convert_time_zone("UTC"))


def table_exists(warehouse: DuckDBResource, table: str) -> bool:
    """Whether the IO manager has written `main.<table>` yet (it does on an asset's first materialization)."""
    sql = "select count(*) as n from information_schema.tables where table_schema = 'main' and table_name = ?"
    return bool(query(warehouse, sql, [table])["n"][0])
