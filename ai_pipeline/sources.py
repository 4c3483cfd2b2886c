"""The declared landing sources: one `defs.yaml` per source, its attributes a `SourceDeclaration`.

The built-in declarations live in `ai_pipeline/defs/sources/<name>/defs.yaml`; `AI_PIPELINE_SOURCES_DIR` names a
folder with more (`<name>/defs.yaml` each). Adding a source takes a YAML file and no Python. The component the
YAML names, `ai_pipeline.components.LandingSource`, is this declaration plus what `dg` needs to build a lone source;
the project's own graph reads the declarations here, so the Dagster layer never imports the component.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import dagster as dg
import yaml
from pydantic import BaseModel, PrivateAttr, ValidationError, model_validator

from ai_pipeline.lib.ingest import contracts
from ai_pipeline.lib.ingest.formats import DEFAULT_MAX_RECORD_LINES, ReadOptions, TreeShape
from ai_pipeline.lib.ingest.mapping import NORMALIZERS, TimestampSpec, declared_mapping
from ai_pipeline.lib.ingest.raw import SourceMapping
from ai_pipeline.lib.ingest.routing import DEFAULT_LATENESS_DAYS
from ai_pipeline.lib.ingest.validation import routing_field
from ai_pipeline.lib.llm import contracts as llm_contracts

BUILT_IN = Path(__file__).resolve().parent / "defs" / "sources"
# The component a `defs.yaml` names (`ai_pipeline.components`, which builds a lone source with `dg`).
COMPONENT_TYPE = "ai_pipeline.components.LandingSource"


CONTRACTS: dict[str, type[BaseModel]] = {
    "Event": contracts.Event,
    "User": contracts.User,
    "ChatMessage": llm_contracts.ChatMessage,
    "TranscriptPair": llm_contracts.TranscriptPair,
}
Normalizer = Literal[tuple(NORMALIZERS)]


class TreeSettings(dg.Model):
    """JSON records that each hold a tree of messages: one row per message (`lib.ingest.trees`)."""

    children: str  # the key of a message's replies, e.g. replies
    id: str  # the key of a message's id, e.g. message_id (the independent count looks for it)
    root: str | None = None  # the key of the root message in each record, e.g. prompt (default: the record)
    inherit: list[str] = []  # the record's fields every message carries, e.g. [message_tree_id]


class ReadSettings(dg.Model):
    """How the files are read; compression and byte-order marks are recognized whatever is declared."""

    encoding: str | None = None  # e.g. cp1252 for a legacy export; default UTF-8
    delimiter: str | None = None  # default "," (tab for .tsv)
    max_record_lines: int = DEFAULT_MAX_RECORD_LINES  # the most lines one quoted CSV record may span
    tree: TreeSettings | None = None


class TimestampSettings(dg.Model):
    """The contract's time field, parsed from a source column that is not ISO 8601."""

    column: str
    format: str  # strptime, e.g. "%m/%d/%y %H:%M"
    timezone: str = "UTC"  # the zone the source's local times are in, e.g. Europe/London
    field: str | None = None  # default: the contract's event time (the field rows are routed to their day by)


class SourceDeclaration(dg.Model):
    """A folder of landing files mapped into a contract: the `attributes` of a source's `defs.yaml`."""

    name: str
    folder: str
    contract: Literal[tuple(CONTRACTS)]
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
    def _coherent(self) -> SourceDeclaration:
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

    def declared_at(self, path: Path) -> SourceDeclaration:
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
        tree = self.read.tree
        shape = TreeShape(tree.children, tree.id, tree.root, tuple(tree.inherit)) if tree else None
        return ReadOptions(
            self.read.encoding, self.read.delimiter, max_record_lines=self.read.max_record_lines, tree=shape
        )


class SourceDeclarationError(ValueError):
    """A `defs.yaml` that does not declare a usable landing source; the message names the file."""


def _load(path: Path) -> SourceDeclaration:
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SourceDeclarationError(f"{path}: not YAML ({exc})") from exc
    if document.get("type") != COMPONENT_TYPE:
        raise SourceDeclarationError(f"{path}: type is {document.get('type')!r}, expected {COMPONENT_TYPE!r}")
    try:
        # Every attribute is a plain value (no templates to render): validating the component's model builds it.
        return SourceDeclaration.model_validate(document.get("attributes") or {}).declared_at(path)
    except (ValidationError, ValueError) as exc:
        raise SourceDeclarationError(f"{path}: {exc}") from exc


def load_sources(extra: Path | None = None) -> list[SourceDeclaration]:
    """The built-in sources, then those declared under `extra`; names and folders must be unique."""
    folders = [BUILT_IN, *([extra] if extra else [])]
    sources = [_load(path) for folder in folders for path in sorted(folder.glob("*/defs.yaml"))]
    for attribute in ("name", "folder"):
        values = [getattr(s, attribute) for s in sources]
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise SourceDeclarationError(f"more than one landing source with the {attribute} {repeated}")
    return sources
