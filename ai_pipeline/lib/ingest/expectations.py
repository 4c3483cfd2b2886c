"""Great Expectations suites on the validated tables, for Dagster asset checks (no Dagster import here).

The suites are data: for each suite, a tuple of `(expectation type, arguments)` in GX's own vocabulary.
Their severity differs on purpose, and the caller maps it onto Dagster's:
- `events_contract` / `users_contract` (ERROR, blocking): what the data contract guarantees, re-asserted on
  the stored table by an independent engine (GX on pandas, not our Polars compiler), plus table-level
  properties no row-level contract can state (unique keys). Not "at least one row": a source may legitimately
  send nothing on a day (profiles do not change every day); a feed that stops is what the freshness policies and
  lag checks report.
- A day without rows has nothing to judge: every suite passes it, saying so (an empty day's mean is no signal).
- `events_statistics` (WARN): plausibility of the day's numbers; a failure is worth a look, not a stop.

`great_expectations` is imported inside the functions: it takes seconds, and the Dagster code location must
load fast. One ephemeral context per process holds one validation definition per suite, built on first use;
each call then only converts the frame and validates it. GX keeps the last batch, its metrics and every
result on the context; `run_suite` drops them after each call, so no data or verdict outlives it.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import polars as pl

from ai_pipeline.lib.ingest import contracts

EVENTS_CONTRACT = "events_contract"
EVENTS_STATISTICS = "events_statistics"
USERS_CONTRACT = "users_contract"

ERROR = "ERROR"
WARN = "WARN"

# A GX expectation type and its arguments. {"$PARAMETER": name} is a value given at run time (see PARAMETERS).
Spec = tuple[str, dict[str, Any]]


def _python_regex(pattern: str) -> str:
    """A contract pattern (written for Rust `regex`) as GX's pandas engine should run it with Python's `re`.

    - `$` at the end becomes `\\Z`: Python's `$` also matches before a final newline, so "u1\\n" would pass.
    - Groups become non-capturing: pandas warns on every call about a pattern with capture groups.
    """
    if pattern.endswith("$"):
        pattern = pattern[:-1] + r"\Z"
    return re.sub(r"(?<!\\)\((?!\?)", "(?:", pattern)


SUITES: dict[str, tuple[Spec, ...]] = {
    EVENTS_CONTRACT: (
        ("expect_column_values_to_not_be_null", {"column": "event_id"}),
        ("expect_column_values_to_not_be_null", {"column": "user_id"}),
        ("expect_column_values_to_not_be_null", {"column": "event_type"}),
        ("expect_column_values_to_not_be_null", {"column": "event_time"}),
        ("expect_column_values_to_be_between", {"column": "amount", "min_value": 0, "max_value": 1_000_000}),
        ("expect_column_values_to_be_in_set", {"column": "event_type", "value_set": list(contracts.EVENT_TYPES)}),
        ("expect_column_values_to_match_regex", {"column": "user_id", "regex": _python_regex(contracts.ID_PATTERN)}),
        ("expect_column_values_to_be_unique", {"column": "event_id"}),
    ),
    EVENTS_STATISTICS: (
        # Amounts are carried by purchases and cancellations; typical e-commerce baskets average tens of
        # currency units. A day's mean outside [1, 500] means a unit or parsing change upstream (cents, a
        # quantity read as a price), not a shopping trend.
        (
            "expect_column_mean_to_be_between",
            {
                "column": "amount",
                "min_value": {"$PARAMETER": "mean_amount_min"},
                "max_value": {"$PARAMETER": "mean_amount_max"},
            },
        ),
        # The contract lets any event go without an amount; a purchase or cancellation without one is
        # legal but useless for revenue features. A few are noise, more is a source that stopped sending them.
        (
            "expect_column_values_to_not_be_null",
            {
                "column": "amount",
                "mostly": 0.99,
                "row_condition": {
                    "type": "comparison",
                    "column": {"name": "event_type"},
                    "operator": "IN",
                    "parameter": ["purchase", "cancellation"],
                },
            },
        ),
    ),
    USERS_CONTRACT: (
        ("expect_column_values_to_not_be_null", {"column": "user_id"}),
        ("expect_column_values_to_not_be_null", {"column": "email"}),
        ("expect_column_values_to_not_be_null", {"column": "signup_time"}),
        ("expect_column_values_to_be_between", {"column": "age", "min_value": 0, "max_value": 150}),
        ("expect_column_values_to_match_regex", {"column": "email", "regex": _python_regex(contracts.EMAIL_PATTERN)}),
        ("expect_column_values_to_be_unique", {"column": "user_id"}),
    ),
}

SEVERITY: dict[str, str] = {EVENTS_CONTRACT: ERROR, EVENTS_STATISTICS: WARN, USERS_CONTRACT: ERROR}

# Defaults of the run-time parameters of each suite; `run_suite(..., parameters=...)` overrides them.
PARAMETERS: dict[str, dict[str, float]] = {
    EVENTS_CONTRACT: {},
    EVENTS_STATISTICS: {"mean_amount_min": 1.0, "mean_amount_max": 500.0},
    USERS_CONTRACT: {},
}

EXAMPLES = 5  # unexpected values kept per failed expectation


@dataclass(frozen=True)
class FailedExpectation:
    expectation: str  # the GX type, e.g. "expect_column_values_to_be_between"
    column: str | None
    kwargs: dict[str, Any]  # the other arguments, parameters resolved (JSON-serializable)
    observed_value: Any  # aggregate expectations (row count, mean); None for per-row ones
    unexpected_count: int | None  # per-row expectations
    unexpected_percent: float | None  # of the non-null values where GX counts nulls apart
    unexpected_values: tuple[str, ...]  # a few distinct offending values, as text ("null" for a missing one)
    exception: str | None  # set when GX could not evaluate the expectation (e.g. a missing column)

    def describe(self) -> str:
        args = ", ".join(f"{k}={_compact(v)}" for k, v in self.kwargs.items())
        head = f"`{self.expectation}`" + (f" {self.column}" if self.column else "") + (f" ({args})" if args else "")
        if self.exception is not None:
            return f"{head}: not evaluated: {self.exception}"
        parts = []
        if self.unexpected_count is not None:
            percent = "" if self.unexpected_percent is None else f" ({self.unexpected_percent:.2f}%)"
            parts.append(f"{self.unexpected_count} unexpected{percent}")
        else:
            parts.append(f"observed {_compact(self.observed_value)}")
        if self.unexpected_values:
            parts.append("e.g. " + ", ".join(v if v == "null" else json.dumps(v) for v in self.unexpected_values))
        return f"{head}: {', '.join(parts)}"


@dataclass(frozen=True)
class SuiteResult:
    suite: str
    severity: str  # ERROR or WARN (see SEVERITY)
    success: bool
    rows: int
    evaluated: int
    failed: tuple[FailedExpectation, ...]  # in the suite's declared order
    seconds: float  # conversion to pandas and validation

    def describe(self) -> str:
        """Markdown: one line per failing expectation with its observed values."""
        if not self.rows and not self.evaluated:
            return f"No rows: nothing for `{self.suite}` to judge."
        if not self.failed:
            return f"All {self.evaluated} expectations of `{self.suite}` passed on {self.rows} rows."
        return "\n".join(f"- {f.describe()}" for f in self.failed)

    def as_metadata(self) -> dict[str, int | float | str]:
        """JSON-serializable values for asset check metadata (wrap `failures` in MetadataValue.md)."""
        return {
            "suite": self.suite,
            "severity": self.severity,
            "rows": self.rows,
            "expectations_evaluated": self.evaluated,
            "expectations_failed": len(self.failed),
            "validation_seconds": round(self.seconds, 3),
            "failures": self.describe(),
        }


def suite_columns(name: str) -> list[str]:
    """The columns a suite reads, in first-use order."""
    columns: list[str] = []
    for _, kwargs in _specs(name):
        for column in (kwargs.get("column"), kwargs.get("row_condition", {}).get("column", {}).get("name")):
            if column is not None and column not in columns:
                columns.append(column)
    return columns


def run_suite(name: str, frame: pl.DataFrame, *, parameters: Mapping[str, float] | None = None) -> SuiteResult:
    """Validates `frame` against the suite `name`; never raises on bad data (that is what it reports)."""
    _specs(name)
    defaults = PARAMETERS.get(name, {})
    unknown = set(parameters or {}) - set(defaults)
    if unknown:
        raise ValueError(f"suite {name!r} takes no parameter {sorted(unknown)}; it takes {sorted(defaults)}")
    values = {**defaults, **(parameters or {})}
    started = time.perf_counter()
    # Only the columns the suite reads: converting lineage columns to pandas is wasted time. A frame with
    # none of them still goes in whole, so that its row count is measured and the missing columns reported.
    present = [c for c in suite_columns(name) if c in frame.columns]
    if frame.height == 0 and len(present) == len(suite_columns(name)):
        return SuiteResult(name, SEVERITY[name], True, 0, 0, (), time.perf_counter() - started)
    data = (frame.select(present) if present else frame).to_pandas()
    with _LOCK:
        validation = _validation(name)
        try:
            outcome = validation.run(
                batch_parameters={"dataframe": data},
                expectation_parameters=values,
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": 4 * EXAMPLES},
            )
        finally:
            _forget(validation)
    order = {expectation.id: i for i, expectation in enumerate(validation.suite.expectations)}
    results = sorted(outcome.results, key=lambda r: order.get(r.expectation_config.id, len(order)))
    return SuiteResult(
        suite=name,
        severity=SEVERITY[name],
        success=bool(outcome.success),
        rows=frame.height,
        evaluated=len(results),
        failed=tuple(_failure(r) for r in results if not r.success),
        seconds=time.perf_counter() - started,
    )


def _specs(name: str) -> tuple[Spec, ...]:
    try:
        return SUITES[name]
    except KeyError:
        raise ValueError(f"no expectation suite {name!r}; known: {sorted(SUITES)}") from None


_LOCK = threading.Lock()  # one context per process; GX's engine holds one batch at a time
_CONTEXT: Any = None
_VALIDATIONS: dict[str, Any] = {}


def _validation(name: str) -> Any:
    """The cached ValidationDefinition of a suite (call under _LOCK)."""
    global _CONTEXT
    if name in _VALIDATIONS:
        return _VALIDATIONS[name]
    specs = _specs(name)
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    if _CONTEXT is None:
        _CONTEXT = gx.get_context(mode="ephemeral")
        # tqdm bars would go to the run's stderr on every call.
        _CONTEXT.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        _CONTEXT.data_sources.add_pandas("tables")
    asset = _CONTEXT.data_sources.get("tables").add_dataframe_asset(name)
    batch = asset.add_batch_definition_whole_dataframe(name)
    expectations = [getattr(gxe, _class_name(kind))(**kwargs) for kind, kwargs in specs]
    suite = _CONTEXT.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    validation = _CONTEXT.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    _VALIDATIONS[name] = validation
    return validation


def _forget(validation: Any) -> None:
    """Drops what GX keeps after a run: the batch's dataframe, its computed metrics, the stored result."""
    store = _CONTEXT.validation_results_store
    for key in store.list_keys():
        store.remove_key(key)
    engine = validation.data.data_asset.datasource.get_execution_engine()
    engine.batch_manager.reset_batch_cache()
    engine.batch_manager.batch_data_cache.clear()
    # Metrics are keyed by batch id, the same on every call: a stale one must never stand in for a new one.
    getattr(engine, "_metric_cache", {}).clear()


def _class_name(kind: str) -> str:
    return "".join(part.capitalize() for part in kind.split("_"))


def _failure(result: Any) -> FailedExpectation:
    config = result.expectation_config
    kwargs = {k: _plain(v) for k, v in config.kwargs.items() if k not in ("batch_id", "column")}
    details = result.result or {}
    exception = "; ".join(_exception_messages(result.exception_info or {})) or None
    examples: list[str] = []
    for value in details.get("partial_unexpected_list") or []:
        text = _text(value)
        if text not in examples and len(examples) < EXAMPLES:
            examples.append(text)
    count = details.get("unexpected_count")
    percent = _plain(details.get("unexpected_percent"))
    return FailedExpectation(
        expectation=config.type,
        column=config.kwargs.get("column"),
        kwargs=kwargs,
        observed_value=_plain(details.get("observed_value")),
        unexpected_count=None if count is None else int(count),
        unexpected_percent=None if percent is None else float(percent),
        unexpected_values=tuple(examples),
        exception=exception,
    )


def _exception_messages(info: Mapping[str, Any]) -> list[str]:
    """GX gives one exception record, or one per failed metric keyed by the metric's id."""
    records = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, Mapping)]
    messages: list[str] = []
    for record in records:
        message = str(record.get("exception_message"))
        if record.get("raised_exception") and message not in messages:
            messages.append(message)
    return messages


def _missing(value: Any) -> bool:
    try:
        return value is None or bool(value != value)  # NaN and NaT are not equal to themselves
    except (TypeError, ValueError):
        return False


def _plain(value: Any) -> Any:
    """A JSON-serializable copy: numpy scalars unwrapped, NaN as None, timestamps as ISO text."""
    if hasattr(value, "dtype") and getattr(value, "ndim", None) == 0:  # a numpy scalar
        value = str(value) if value.dtype.kind in "mM" else value.item()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if _missing(value):
        return None
    if isinstance(value, float) and math.isinf(value):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _text(value: Any) -> str:
    plain = _plain(value)
    return "null" if plain is None else plain if isinstance(plain, str) else json.dumps(plain)


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
