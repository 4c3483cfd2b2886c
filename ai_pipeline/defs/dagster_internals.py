"""The only module that imports Dagster's private API; `ai_pipeline_tests/test_dagster_internals.py` pins what
the project relies on, so a Dagster upgrade that changes it fails there first.

- `AssetCheckEvaluationTargetMaterializationData`: ties a check evaluation that an asset step emits for one day
  to that day's materialization (what Dagster itself fills in for a check result of the step's own output).
- `DbTypeHandler`, `TableSlice`: the DuckDB IO manager's type-handler interface, for a handler that also creates
  the table of an empty frame.
"""

from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.storage.db_io_manager import DbTypeHandler, TableSlice

__all__ = ["AssetCheckEvaluationTargetMaterializationData", "DbTypeHandler", "TableSlice"]
