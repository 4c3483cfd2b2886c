"""dbt marts over the validated tables, as Dagster assets in the same graph.

`build_dbt_assets(settings, partitions)` returns `(assets, resources)`:
  - `assets`: one `@dbt_assets` definition for every model in `dbt_project/` (`stg_events`, `stg_users`,
    `fct_user_daily_activity`, `dim_users`), daily-partitioned, backfilled in ranges like every daily asset. A
    run is one `dbt build` over the partition window, so dbt data tests become asset checks (one result per day of
    the window) and unit tests run.
  - `resources`: `{"dbt": DbtCliResource}`, the resource that assets definition needs.

The warehouse path goes to dbt as the `warehouse_path` var (read by `dbt_project/profiles.yml`):
`DbtCliResource.cli` hands the subprocess a copy of `os.environ` and takes no environment of its own, so a
var is how a run writes to the `warehouse` resource's file without touching the caller's environment.
"""

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, DbtProject, dbt_assets
from dagster_duckdb import DuckDBResource

from ai_pipeline.defs.keys import DUCKDB_POOL, MARTS_GROUP
from ai_pipeline.defs.policy import DAILY_BACKFILL, OWNERS, partition_days
from ai_pipeline.defs.reporting import DayChecks
from ai_pipeline.lib.quality import Verdict
from ai_pipeline.settings import DBT_PROJECT_DIR, Settings

# The venv's dbt, found without relying on PATH (the venv need not be activated).
DBT_EXECUTABLE = Path(sys.executable).parent / "dbt"
# dbt must never need the network (dbt_project.yml also turns these off).
DBT_OFFLINE_ENV = {"DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DO_NOT_TRACK": "1"}
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

    dbt data tests become asset checks partitioned like their model, so their verdicts are recorded per
    partition like every other check in the pipeline (a test over a range stands for each of its days).
    """

    def __init__(self, partitions_def: dg.PartitionsDefinition):
        # Each model links to its SQL file in the UI.
        super().__init__(settings=DagsterDbtTranslatorSettings(enable_code_references=True))
        self._partitions_def = partitions_def

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] != "model":
            return spec
        return spec.replace_attributes(
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


def _manifest_is_stale(project_dir: Path, manifest: Path) -> bool:
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    return any(
        path.stat().st_mtime > built
        for path in project_dir.rglob("*")
        if path.suffix in _DBT_SOURCE_SUFFIXES and path.relative_to(project_dir).parts[0] not in _DBT_OUTPUT_DIRS
    )


def prepare_manifest(project_dir: Path = DBT_PROJECT_DIR) -> Path:
    """`target/manifest.json`, parsed first when it is missing (fresh clone) or older than a project file.

    dbt parses into a private folder and the files are then renamed into place, so a process loading the
    manifest while another one parses never reads half a file.
    """
    target = project_dir / "target"
    manifest = target / "manifest.json"
    if not _manifest_is_stale(project_dir, manifest):
        return manifest
    staging = target / f"parse-{uuid.uuid4().hex[:12]}"
    try:
        done = subprocess.run(
            [str(DBT_EXECUTABLE), "parse", "--target-path", str(staging), "--log-path", str(staging)],
            cwd=project_dir,
            env={**os.environ, **DBT_OFFLINE_ENV, "DBT_PROFILES_DIR": str(project_dir)},
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"dbt parse failed in {project_dir}:\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
        # The manifest last: its modification time says the parse is complete.
        for name in ("partial_parse.msgpack", "manifest.json"):
            os.replace(staging / name, target / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def build_dbt_assets(
    settings: Settings, partitions_def: dg.DailyPartitionsDefinition
) -> tuple[dg.AssetsDefinition, dict[str, DbtCliResource]]:
    """The dbt assets over the `warehouse` resource's file and the `dbt` resource they need (module docstring)."""
    manifest = prepare_manifest(DBT_PROJECT_DIR)

    @dbt_assets(
        manifest=manifest,
        project=DbtProject(DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR),
        name="dbt_marts",
        dagster_dbt_translator=MartsTranslator(partitions_def),
        partitions_def=partitions_def,
        # The models replace exactly the window they are given, so a range is one `dbt build`.
        backfill_policy=DAILY_BACKFILL,
        pool=DUCKDB_POOL,
    )
    def dbt_marts(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: DuckDBResource):
        window = context.partition_time_window
        args = dbt_build_args(dbt_vars_for_window(window.start, window.end), Path(warehouse.database))
        # Each run's dbt artifacts (run_results.json, logs) lie beside the warehouse it wrote.
        target_path = settings.home / "dbt" / context.run.run_id
        days = partition_days(context)
        per_day = DayChecks(context)
        for event in dbt.cli(args, context=context, target_path=target_path).stream():
            if not isinstance(event, dg.AssetCheckResult):
                yield event
                continue
            # A dbt test ran once over the window: its verdict stands for each day of it.
            verdict = Verdict(event.passed, event.severity.value, event.description or "")
            for day in days:
                yield from per_day.results(
                    day, verdict, event.metadata, asset_key=event.asset_key, check_name=event.check_name
                )

    resource = DbtCliResource(
        project_dir=DBT_PROJECT_DIR,
        profiles_dir=DBT_PROJECT_DIR,
        dbt_executable=str(DBT_EXECUTABLE),
    )
    return dbt_marts, {"dbt": resource}
