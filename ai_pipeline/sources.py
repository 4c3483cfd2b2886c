"""The declared landing sources: one `defs.yaml` per source (`ai_pipeline.components.LandingSource`).

The built-in declarations live in `ai_pipeline/defs/sources/<name>/defs.yaml`; `AI_PIPELINE_SOURCES_DIR` names a
folder with more (`<name>/defs.yaml` each). Adding a source takes a YAML file and no Python.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from ai_pipeline.components import LandingSource

BUILT_IN = Path(__file__).resolve().parent / "defs" / "sources"
COMPONENT_TYPE = f"{LandingSource.__module__}.{LandingSource.__name__}"


class SourceDeclarationError(ValueError):
    """A `defs.yaml` that does not declare a usable landing source; the message names the file."""


def _load(path: Path) -> LandingSource:
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SourceDeclarationError(f"{path}: not YAML ({exc})") from exc
    if document.get("type") != COMPONENT_TYPE:
        raise SourceDeclarationError(f"{path}: type is {document.get('type')!r}, expected {COMPONENT_TYPE!r}")
    try:
        # Every attribute is a plain value (no templates to render): validating the component's model builds it.
        return LandingSource.model_validate(document.get("attributes") or {}).declared_at(path)
    except (ValidationError, ValueError) as exc:
        raise SourceDeclarationError(f"{path}: {exc}") from exc


def load_sources(extra: Path | None = None) -> list[LandingSource]:
    """The built-in sources, then those declared under `extra`; names and folders must be unique."""
    folders = [BUILT_IN, *([extra] if extra else [])]
    sources = [_load(path) for folder in folders for path in sorted(folder.glob("*/defs.yaml"))]
    for attribute in ("name", "folder"):
        values = [getattr(s, attribute) for s in sources]
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise SourceDeclarationError(f"more than one landing source with the {attribute} {repeated}")
    return sources
