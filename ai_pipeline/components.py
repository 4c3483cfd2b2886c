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

from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import BaseModel, PrivateAttr, model_validator

from ai_pipeline.lib.ingest import contracts
from ai_pipeline.lib.ingest.formats import DEFAULT_MAX_RECORD_LINES, ReadOptions
from ai_pipeline.lib.ingest.mapping import NORMALIZERS, TimestampSpec, declared_mapping
from ai_pipeline.lib.ingest.raw import SourceMapping
from ai_pipeline.lib.ingest.routing import DEFAULT_LATENESS_DAYS
from ai_pipeline.lib.ingest.validation import routing_field

CONTRACTS: dict[str, type[BaseModel]] = {"Event": contracts.Event, "User": contracts.User}
Normalizer = Literal[tuple(NORMALIZERS)]


class ReadSettings(dg.Model):
    """How the files are read; compression and byte-order marks are recognized whatever is declared."""

    encoding: str | None = None  # e.g. cp1252 for a legacy export; default UTF-8
    delimiter: str | None = None  # default "," (tab for .tsv)
    max_record_lines: int = DEFAULT_MAX_RECORD_LINES  # the most lines one quoted CSV record may span


class TimestampSettings(dg.Model):
    """The contract's time field, parsed from a source column that is not ISO 8601."""

    column: str
    format: str  # strptime, e.g. "%m/%d/%y %H:%M"
    timezone: str = "UTC"  # the zone the source's local times are in, e.g. Europe/London
    field: str | None = None  # default: the contract's event time (the field rows are routed to their day by)


class LandingSource(dg.Component, dg.Model, dg.Resolvable):
    """A folder of landing files mapped into a contract: raw asset, checks, sensor and freshness, from YAML."""

    name: str
    folder: str
    contract: Literal["Event", "User"]
    description: str = ""
    lateness_days: int = DEFAULT_LATENESS_DAYS  # rows this many days older than their arrival still reach their day
    cadence_days: int = 1  # a delivery is expected at least this often (freshness); a quiet day in between is fine
    read: ReadSettings = ReadSettings()
    columns: dict[str, str] = {}  # source column -> contract field
    required_columns: list[str] | None = None  # default: the contract's required fields, under any accepted name
    derive: dict[str, str] = {}  # contract field -> SQL expression over the source columns (text)
    timestamp: TimestampSettings | None = None
    constants: dict[str, str] = {}
    normalize: dict[str, list[Normalizer]] = {}
    _declared_in: Path | None = PrivateAttr(default=None)  # the `defs.yaml` it was loaded from

    @model_validator(mode="after")
    def _coherent(self) -> LandingSource:
        if not self.name.replace("_", "").isalnum() or not self.name[0].isalpha():
            raise ValueError(f"name {self.name!r}: use letters, digits and '_' (it becomes the asset raw_<name>)")
        if self.lateness_days < 0 or self.cadence_days < 1:
            raise ValueError("lateness_days must be 0 or more and cadence_days 1 or more")
        fields = list(self.contract_model.model_fields)
        unknown = sorted(set(self.columns.values()) - set(fields))
        if unknown:
            raise ValueError(f"columns map to {unknown}, which are not fields of {self.contract}: {fields}")
        self.mapping  # noqa: B018  (compiles the declaration: unknown fields and unparsable SQL fail here)
        return self

    def declared_at(self, path: Path) -> LandingSource:
        """Records the `defs.yaml` this source was loaded from (the UI links its asset to it)."""
        self._declared_in = path
        return self

    @property
    def declaration(self) -> Path | None:
        return self._declared_in

    @property
    def contract_model(self) -> type[BaseModel]:
        return CONTRACTS[self.contract]

    @property
    def mapping(self) -> SourceMapping:
        timestamp = None
        if self.timestamp is not None:
            field = self.timestamp.field or routing_field(self.contract_model)
            if field is None:
                raise ValueError(f"timestamp: {self.contract} has no event time; name the field it fills")
            timestamp = TimestampSpec(field, self.timestamp.column, self.timestamp.format, self.timestamp.timezone)
        derive = declared_mapping(
            list(self.contract_model.model_fields),
            derive=self.derive,
            timestamp=timestamp,
            constants=self.constants,
            normalize=self.normalize,
        )
        required = tuple(self.required_columns) if self.required_columns is not None else None
        return SourceMapping(renames=self.columns, required_columns=required, derive=derive)

    @property
    def read_options(self) -> ReadOptions:
        return ReadOptions(self.read.encoding, self.read.delimiter, max_record_lines=self.read.max_record_lines)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        """The source on its own, as `dg` loads a lone `defs.yaml`: its raw asset and landing sensor, configured from
        the environment. The project's code location builds every source in `ai_pipeline.defs.build_defs`."""
        from ai_pipeline.defs.ingest.assets import landing_asset
        from ai_pipeline.defs.ingest.sensors import landing_files_sensor
        from ai_pipeline.defs.policy import daily_partitions
        from ai_pipeline.defs.resources import IO_MANAGER, LANDING, WAREHOUSE, resources_from_env
        from ai_pipeline.settings import Settings

        settings = Settings.from_env()
        partitions = daily_partitions(settings)
        resources = resources_from_env(settings)
        return dg.Definitions(
            assets=[landing_asset(self, settings, partitions)],
            sensors=[landing_files_sensor(self, partitions, resources[LANDING])],
            resources={key: resources[key] for key in (IO_MANAGER, WAREHOUSE, LANDING)},
        )
