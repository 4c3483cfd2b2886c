"""The code location's single entry point: `ai_pipeline.definitions:defs`."""

import dagster as dg

from ai_pipeline.defs import build_defs
from ai_pipeline.defs.execution import executor_from_env
from ai_pipeline.defs.resources import resources_from_env
from ai_pipeline.settings import Settings

settings = Settings.from_env()
defs = build_defs(settings, resources_from_env(settings), executor_from_env())


def lane_job(name: str) -> dg.JobDefinition:
    """A job of this code location, for the processes that rebuild it by reference (a run's steps on Celery
    workers: `dg.build_reconstructable_job("ai_pipeline.definitions", "lane_job", (name,))`)."""
    return defs.resolve_job_def(name)
