"""dbt marts over the validated tables and the feature store's partials, as Dagster assets in the same graph.

`build_dbt_assets(settings, partitions)` returns `(assets, resources)`:
  - `assets`: two `@dbt_assets` definitions over `dbt_project/`, split by how a model is built:
    * `dbt_daily_marts`: the partition-aware incremental models (`fct_user_daily_activity`), daily-partitioned and
      backfilled in ranges like every daily asset; a run is one `dbt build` over the partition window, so their dbt
      data tests are asset checks with one result per day of the window.
    * `dbt_marts`: every other model (the `stg_users` view, the `dim_users` table), rebuilt in full by each run and
      therefore not partitioned; their data tests are plain asset checks.
    Each materialization carries the table's row count, column schema and column lineage (fetched by dagster-dbt
    through the dbt adapter once the model is built).
  - `resources`: `{"dbt": DbtCliResource}`, the resource both need.

`DBT_PROJECT` is prepared by dagster-dbt's own preparer: `scripts/bootstrap` runs `dagster-dbt project
prepare-and-package` after installing, and loading the code location runs the same preparer when a project file is
newer than the manifest (an edited model), so the manifest is never stale.

The warehouse path goes to dbt as the `warehouse_path` var (read by `dbt_project/profiles.yml`):
`DbtCliResource.cli` hands the subprocess a copy of `os.environ` and takes no environment of its own, so a
var is how a run writes to the `warehouse` resource's file without touching the caller's environment.
"""

import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliInvocation,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)
from dagster_duckdb import DuckDBResource

from ai_pipeline.defs.execution import heavy_step
from ai_pipeline.defs.keys import DUCKDB_POOL, MARTS_GROUP
from ai_pipeline.defs.policy import DAILY_BACKFILL, OWNERS, partition_days
from ai_pipeline.defs.reporting import DayChecks
from ai_pipeline.defs.resources import LakeWarehouse, window_slice
from ai_pipeline.lib import lakehouse
from ai_pipeline.lib.quality import Verdict
from ai_pipeline.settings import DBT_PROJECT_DIR, Settings

# The venv's dbt, found without relying on PATH (the venv need not be activated).
DBT_EXECUTABLE = Path(sys.executable).parent / "dbt"
DBT_PROJECT = DbtProject(DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
# The models a partition run rebuilds by window; every other model is rebuilt in full.
INCREMENTAL = "config.materialized:incremental"
_DBT_SOURCE_SUFFIXES = {".sql", ".yml", ".yaml"}
_DBT_OUTPUT_DIRS = {"target", "logs", "dbt_packages"}


def dbt_vars_for_window(start: datetime, end: datetime) -> dict[str, str]:
    """The partition window [start, end) as the dbt vars `min_date`/`max_date` (ISO dates, UTC partitions)."""
    if start >= end:
        raise ValueError(f"empty partition window [{start}, {end})")
    return {"min_date": start.date().isoformat(), "max_date": end.date().isoformat()}


def dbt_build_args(dbt_vars: Mapping[str, str], warehouse: Path) -> list[str]:
    """`dbt build` for the given vars, writing to the DuckDB file `warehouse`."""
    return ["build", "--vars", json.dumps({**dbt_vars, "warehouse_path": str(warehouse)}, sort_keys=True)]


class MartsTranslator(DagsterDbtTranslator):
    """Models become flat keys (the model name) in group `marts`; sources keep their `meta.dagster.asset_key`.

    With a partitions definition, dbt data tests become asset checks partitioned like their model, so their
    verdicts are recorded per partition like every other check in the pipeline (a test over a range stands for
    each of its days).
    """

    def __init__(self, partitions_def: dg.PartitionsDefinition | None):
        # Each model links to its SQL file in the UI.
        super().__init__(settings=DagsterDbtTranslatorSettings(enable_code_references=True))
        self._partitions_def = partitions_def

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] != "model":
            return spec
        # A daily model names its day column like every daily table (`partition_expr`): cluster mode publishes
        # a run's window of it to the lake.
        column = props.get("config", {}).get("meta", {}).get("partition_expr")
        return spec.replace_attributes(
            metadata={**spec.metadata, **({"partition_expr": column} if column else {})},
            key=dg.AssetKey(props["name"]),
            group_name=MARTS_GROUP,
            owners=OWNERS,
            kinds={"dbt", "duckdb"},
            description=props.get("description") or spec.description,
            partitions_def=self._partitions_def,
        )

    def get_asset_check_spec(
        self, asset_spec: dg.AssetSpec, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetCheckSpec | None:
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        return spec._replace(partitions_def=asset_spec.partitions_def) if spec else None


def manifest_is_stale(project: DbtProject) -> bool:
    """No manifest yet, or a project file newer than it."""
    if not project.manifest_path.exists():
        return True
    built = project.manifest_path.stat().st_mtime
    return any(
        path.stat().st_mtime > built
        for path in project.project_dir.rglob("*")
        if path.suffix in _DBT_SOURCE_SUFFIXES
        and path.relative_to(project.project_dir).parts[0] not in _DBT_OUTPUT_DIRS
    )


@contextmanager
def _venv_dbt_on_path() -> Iterator[None]:
    """dagster-dbt's preparer runs `dbt` from PATH, and the venv need not be activated: its bin goes first."""
    before = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([str(DBT_EXECUTABLE.parent), before])
    try:
        yield
    finally:
        os.environ["PATH"] = before


def prepare_manifest(project: DbtProject = DBT_PROJECT) -> Path:
    """The project's manifest, prepared by dagster-dbt's preparer (`dbt parse` under its lock) when stale."""
    if manifest_is_stale(project):
        with _venv_dbt_on_path():
            project.preparer.prepare(project)
    return project.manifest_path


def _dbt_build(
    context: dg.AssetExecutionContext,
    dbt: DbtCliResource,
    warehouse: DuckDBResource,
    settings: Settings,
    dbt_vars: Mapping[str, str],
) -> Iterator[Any]:
    """The events of one `dbt build` into the warehouse, with row counts and column metadata fetched for each built
    model.

    On the lake (`LakeWarehouse`) dbt builds in a DuckDB file of this step's own, which first receives copies of the
    lake tables it reads (the sources and the models this step does not build); each model it builds is published to
    the lake (the run's window of a daily model, all of any other) once the build is over, and then reported. No DuckDB
    file is shared between steps or machines."""
    # Each run's dbt artifacts (run_results.json, logs) lie beside the warehouse it wrote.
    target_path = settings.home / "dbt" / context.run.run_id / context.op_execution_context.op.name
    lake = Path(warehouse.lake) if isinstance(warehouse, LakeWarehouse) else None
    database = target_path / "warehouse.duckdb" if lake else Path(warehouse.database)
    if lake:
        target_path.mkdir(parents=True, exist_ok=True)
        built = {key.path[-1] for key in context.selected_asset_keys}
        lakehouse.copy_into(database, lake, [name for name in _dbt_tables() if name not in built])
    invocation = dbt.cli(dbt_build_args(dbt_vars, database), context=context, target_path=target_path)
    events = invocation.stream().fetch_row_counts().fetch_column_metadata()
    try:
        if lake is None:
            yield from events
            return
        # dbt-duckdb's adapter holds the file open in this process until the build's metadata is fetched.
        events = list(events)
    finally:
        _release_warehouse(invocation)
    for event in events:
        if isinstance(event, dg.Output):
            _publish(context, database, lake, event.output_name)
        yield event
    database.unlink()


def _dbt_tables() -> list[str]:
    """The tables of the dbt project: its sources' and its models'."""
    manifest = json.loads(DBT_PROJECT.manifest_path.read_text())
    nodes = [*manifest["sources"].values(), *manifest["nodes"].values()]
    return sorted(
        {node.get("identifier") or node["name"] for node in nodes if node["resource_type"] in {"source", "model"}}
    )


def _publish(context: dg.AssetExecutionContext, database: Path, lake: Path, output_name: str) -> None:
    """A model dbt just built, from the step's DuckDB file to the lake: the run's window of a daily model."""
    key = context.assets_def.keys_by_output_name[output_name]
    column = context.assets_def.specs_by_key[key].metadata.get("partition_expr")
    where = lakehouse.Slice()
    if column and context.assets_def.partitions_def is not None:
        where = window_slice(column, context.partition_time_window)
    written = lakehouse.publish(database, lake, key.path[-1], where)
    context.log.info(f"published {key.path[-1]} to the lake: {written.rows} rows, version {written.version}")


def _release_warehouse(invocation: DbtCliInvocation) -> None:
    """Closes the warehouse file that the metadata fetch opened in this process.

    dagster-dbt fetches row counts and columns through dbt-duckdb's adapter here, which keeps the DuckDB file open
    in a class-level environment: the run's next dbt process (or any other writer) would find it locked.
    `test_dbt` runs both dbt steps of each run in one process, so a dbt-duckdb that changes this fails there."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    if invocation.adapter is not None:
        invocation.adapter.cleanup_connections()
    with DuckDBConnectionManager._LOCK:
        if DuckDBConnectionManager._ENV is not None:
            DuckDBConnectionManager._ENV.close()
            DuckDBConnectionManager._ENV = None


def build_dbt_assets(
    settings: Settings, partitions_def: dg.DailyPartitionsDefinition
) -> tuple[list[dg.AssetsDefinition], dict[str, DbtCliResource]]:
    """The dbt assets over the `warehouse` resource's file and the `dbt` resource they need (module docstring)."""
    manifest = prepare_manifest(DBT_PROJECT)

    @dbt_assets(
        manifest=manifest,
        project=DBT_PROJECT,
        name="dbt_daily_marts",
        select=INCREMENTAL,
        dagster_dbt_translator=MartsTranslator(partitions_def),
        partitions_def=partitions_def,
        # The models replace exactly the window they are given, so a range is one `dbt build`.
        backfill_policy=DAILY_BACKFILL,
        pool=DUCKDB_POOL,
        op_tags=heavy_step("dbt"),
    )
    def dbt_daily_marts(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: DuckDBResource):
        window = context.partition_time_window
        days = partition_days(context)
        per_day = DayChecks(context)
        for event in _dbt_build(context, dbt, warehouse, settings, dbt_vars_for_window(window.start, window.end)):
            if not isinstance(event, dg.AssetCheckResult):
                yield event
                continue
            # A dbt test ran once over the window: its verdict stands for each day of it.
            verdict = Verdict(event.passed, event.severity.value, event.description or "")
            for day in days:
                yield from per_day.results(
                    day, verdict, event.metadata, asset_key=event.asset_key, check_name=event.check_name
                )

    @dbt_assets(
        manifest=manifest,
        project=DBT_PROJECT,
        name="dbt_marts",
        exclude=INCREMENTAL,
        dagster_dbt_translator=MartsTranslator(None),
        pool=DUCKDB_POOL,
        op_tags=heavy_step("dbt"),
    )
    def dbt_marts(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: DuckDBResource):
        yield from _dbt_build(context, dbt, warehouse, settings, {})

    resource = DbtCliResource(
        project_dir=DBT_PROJECT_DIR,
        profiles_dir=DBT_PROJECT_DIR,
        dbt_executable=str(DBT_EXECUTABLE),
    )
    return [dbt_daily_marts, dbt_marts], {"dbt": resource}
