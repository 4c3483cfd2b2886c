"""The Dagster instance: embedded (SQLite under the data root, the default) or PostgreSQL.

`DAGSTER_HOME` must be a folder holding a `dagster.yaml`. The embedded one is written here; the PostgreSQL
one is the repository's top-level `dagster.yaml` (connection from DAGSTER_PG_* environment variables),
copied into its own folder under the data root so that Dagster's local files stay out of the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

from ai_pipeline.settings import PROJECT_ROOT, Settings, table_format

POSTGRES_YAML = PROJECT_ROOT / "dagster.yaml"
# The pools' limit in both configurations, which `warehouse_slots` sets.
POOL_LIMIT = "default_limit: 1\n"
DEFAULT_LAKE_WRITERS = 8
EMBEDDED_YAML = """\
# Embedded instance (SQLite under this folder), written by ai_pipeline.instance.
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
concurrency:
  runs:
    max_concurrent_runs: 4
    # One run at a time per lane (runs tagged ai_pipeline/lane, see ai_pipeline/defs/keys.py LANE_TAG): a lane's
    # cumulative state must not be read half-written by another of its runs.
    tag_concurrency_limits:
      - key: ai_pipeline/lane
        value:
          applyLimitPerUniqueValue: true
        limit: 1
  pools:
    granularity: op
    default_limit: 1
    # Up to 3 runs start (process, code load) while another holds the writer slot: a backfill's run start-up
    # overlaps the previous run's work instead of adding to it.
    op_granularity_run_buffer: 3
telemetry:
  enabled: false
"""


def instance_kind(env: dict[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    kind = env.get("AI_PIPELINE_INSTANCE", "embedded")
    if kind not in ("embedded", "postgres"):
        raise ValueError(f"AI_PIPELINE_INSTANCE must be 'embedded' or 'postgres', not {kind!r}")
    return kind


def warehouse_slots(env: dict[str, str] | None = None) -> int:
    """Steps that may use the warehouse at once (the pools' limit): one on the DuckDB file, which allows one writing
    process; on the lake (`AI_PIPELINE_TABLE_FORMAT=delta`) `AI_PIPELINE_LAKE_WRITERS`, default 8, since its
    writers of different partitions commit side by side."""
    env = os.environ if env is None else env
    if table_format(env) != "delta":
        return 1
    return int(env.get("AI_PIPELINE_LAKE_WRITERS") or DEFAULT_LAKE_WRITERS)


def prepare_instance_home(settings: Settings, kind: str = "embedded", env: dict[str, str] | None = None) -> Path:
    """Creates the instance folder for `kind` and returns it (to use as DAGSTER_HOME)."""
    home = settings.dagster_home if kind == "embedded" else settings.home / "dagster-postgres"
    home.mkdir(parents=True, exist_ok=True)
    config = EMBEDDED_YAML if kind == "embedded" else POSTGRES_YAML.read_text()
    slots = warehouse_slots(env)
    (home / "dagster.yaml").write_text(config.replace(POOL_LIMIT, f"default_limit: {slots}\n"))
    return home
