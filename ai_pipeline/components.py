"""Dagster components of the project: a landing source is declared in a `defs.yaml`, not coded.

    type: ai_pipeline.components.LandingSource
    attributes:
      name: online_retail_events          # the asset is raw_online_retail_events
      folder: online_retail               # files are read from <landing>/online_retail/<YYYY-MM-DD>/
      contract: Event                     # Event or User (ai_pipeline/lib/ingest/contracts.py)
      ...

The built-in sources are in `ai_pipeline/defs/sources/<name>/defs.yaml`; more can live in the folder named by
`AI_PIPELINE_SOURCES_DIR` (one `<name>/defs.yaml` each). `ai_pipeline.defs.build_defs` gives every declared source
its raw asset (partitioned by arrival day, with its checks and freshness policy), its landing sensor, and a place
among the validated table's inputs. docs/contracts.md describes every attribute with a complete example.
"""

from __future__ import annotations

import dagster as dg

from ai_pipeline.defs.ingest.assets import landing_asset
from ai_pipeline.defs.ingest.sensors import landing_files_sensor
from ai_pipeline.defs.policy import REACT_INTERVAL_S, daily_partitions, sensor_interval
from ai_pipeline.defs.resources import IO_MANAGER, LANDING, WAREHOUSE, resources_from_env
from ai_pipeline.settings import Settings
from ai_pipeline.sources import SourceDeclaration


class LandingSource(dg.Component, SourceDeclaration, dg.Resolvable):
    """A folder of landing files mapped into a contract: raw asset, checks, sensor and freshness, from YAML."""

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        """The source on its own, as `dg` loads a lone `defs.yaml`: its raw asset and landing sensor, configured from
        the environment. The project's code location builds every source in `ai_pipeline.defs.build_defs`."""
        settings = Settings.from_env()
        partitions = daily_partitions(settings)
        resources = resources_from_env(settings)
        return dg.Definitions(
            assets=[landing_asset(self, settings, partitions)],
            sensors=[
                landing_files_sensor(self, partitions, resources[LANDING], sensor_interval(settings, REACT_INTERVAL_S))
            ],
            resources={key: resources[key] for key in (IO_MANAGER, WAREHOUSE, LANDING)},
        )
