"""The code location's single entry point: `ai_pipeline.definitions:defs`."""

from ai_pipeline.defs import build_defs
from ai_pipeline.settings import Settings

defs = build_defs(Settings.from_env())
