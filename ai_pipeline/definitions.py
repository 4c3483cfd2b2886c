"""The code location's single entry point: `ai_pipeline.definitions:defs`."""

from ai_pipeline.defs import build_defs
from ai_pipeline.defs.execution import executor_from_env
from ai_pipeline.defs.resources import resources_from_env
from ai_pipeline.settings import Settings

settings = Settings.from_env()
defs = build_defs(settings, resources_from_env(settings), executor_from_env())
