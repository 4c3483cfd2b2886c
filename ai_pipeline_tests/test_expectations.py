"""Great Expectations suites: a clean table passes, each seeded defect fails exactly its expectation."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from collections.abc import Callable
from datetime import UTC, date, datetime

import polars as pl
import pytest

from ai_pipeline.lib.ingest import expectations as ex

DAY = date(2024, 3, 1)


def _with_lineage(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        pl.lit(DAY).alias("partition_date"),
        pl.lit("sample").alias("_source"),
        pl.lit("file:///data/events.jsonl").alias("_source_uri"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("_source_offset"),
        pl.lit(None, dtype=pl.Int64).alias("_source_page"),
        pl.lit(datetime(2024, 3, 2, tzinfo=UTC)).alias("_ingested_at"),
    )


def events(**changes: list) -> pl.DataFrame:
    """Six valid events (amounts only on purchases and cancellations); `changes` replaces whole columns."""
    columns = {
        "event_id": ["e1", "e2", "e3", "e4", "e5", "e6"],
        "user_id": ["u1", "u2", "u1", "crm:u.3", "u_4", "u2"],
        "event_type": ["view", "click", "purchase", "purchase", "cancellation", "signup"],
        "event_time": [datetime(2024, 3, 1, h, tzinfo=UTC) for h in (1, 2, 3, 5, 8, 13)],
        "amount": [None, None, 42.5, 19.99, 42.5, None],
        "category": ["books", None, "books", "toys", "books", None],
        "country": ["DE", "FR", "DE", None, "DE", "FR"],
        **changes,
    }
    schema = {"event_time": pl.Datetime("us", "UTC"), "amount": pl.Float64}
    return _with_lineage(pl.DataFrame(columns, schema_overrides=schema))


def users(**changes: list) -> pl.DataFrame:
    columns = {
        "user_id": ["u1", "u2", "crm:u.3", "u_4"],
        "age": [34, None, 0, 150],
        "email": ["ann@example.com", "bob.smith+shop@mail.example.co.uk", "c@x.io", "d_d@example.org"],
        "signup_time": [datetime(2023, m, 1, tzinfo=UTC) for m in (1, 2, 3, 4)],
        "country": ["DE", "FR", None, "DE"],
        **changes,
    }
    schema = {"age": pl.Int64, "signup_time": pl.Datetime("us", "UTC")}
    return _with_lineage(pl.DataFrame(columns, schema_overrides=schema))


def failures(result: ex.SuiteResult) -> list[tuple[str, str | None]]:
    return [(f.expectation, f.column) for f in result.failed]


@pytest.mark.parametrize(
    ("suite", "make"),
    [(ex.EVENTS_CONTRACT, events), (ex.EVENTS_STATISTICS, events), (ex.USERS_CONTRACT, users)],
)
def test_a_clean_table_passes_every_expectation(suite: str, make: Callable[[], pl.DataFrame]) -> None:
    result = ex.run_suite(suite, make())
    assert result.success, result.describe()
    assert result.failed == ()
    assert result.evaluated == len(ex.SUITES[suite])
    assert result.rows == make().height
    assert result.severity == ex.SEVERITY[suite]


def test_suites_are_declared_with_their_severity() -> None:
    assert set(ex.SUITES) == {ex.EVENTS_CONTRACT, ex.EVENTS_STATISTICS, ex.USERS_CONTRACT}
    assert ex.SEVERITY == {ex.EVENTS_CONTRACT: ex.ERROR, ex.EVENTS_STATISTICS: ex.WARN, ex.USERS_CONTRACT: ex.ERROR}
    assert ex.suite_columns(ex.EVENTS_CONTRACT) == ["event_id", "user_id", "event_type", "event_time", "amount"]
    assert ex.suite_columns(ex.USERS_CONTRACT) == ["user_id", "email", "signup_time", "age"]


EVENT_DEFECTS = {
    "null user_id": (
        {"user_id": ["u1", None, "u1", "crm:u.3", "u_4", "u2"]},
        ("expect_column_values_to_not_be_null", "user_id"),
        1,
        ("null",),
    ),
    "negative amount": (
        {"amount": [None, None, -5.0, 19.99, 42.5, None]},
        ("expect_column_values_to_be_between", "amount"),
        1,
        ("-5.0",),
    ),
    "unknown event_type": (
        {"event_type": ["view", "buy", "purchase", "purchase", "cancellation", "signup"]},
        ("expect_column_values_to_be_in_set", "event_type"),
        1,
        ("buy",),
    ),
    "user_id with a space": (
        {"user_id": ["u1", "u 2", "u1", "crm:u.3", "u_4", "u2"]},
        ("expect_column_values_to_match_regex", "user_id"),
        1,
        ("u 2",),
    ),
    # Python's `$` matches before a final newline; the suite anchors with \Z like the contract does.
    "user_id with a trailing newline": (
        {"user_id": ["u1", "u2\n", "u1", "crm:u.3", "u_4", "u2"]},
        ("expect_column_values_to_match_regex", "user_id"),
        1,
        ("u2\n",),
    ),
    "duplicated event_id": (
        {"event_id": ["e1", "e2", "e3", "e4", "e2", "e6"]},
        ("expect_column_values_to_be_unique", "event_id"),
        2,
        ("e2",),
    ),
}


@pytest.mark.parametrize(("changes", "expected", "count", "values"), EVENT_DEFECTS.values(), ids=EVENT_DEFECTS)
def test_each_event_defect_fails_exactly_its_expectation(
    changes: dict, expected: tuple[str, str], count: int, values: tuple[str, ...]
) -> None:
    result = ex.run_suite(ex.EVENTS_CONTRACT, events(**changes))
    assert not result.success
    assert failures(result) == [expected]
    [failed] = result.failed
    assert failed.unexpected_count == count
    assert failed.unexpected_values == values
    assert failed.exception is None
    assert ex.run_suite(ex.EVENTS_STATISTICS, events(**changes)).success


def test_the_amount_range_and_the_percent_report_what_gx_measured() -> None:
    result = ex.run_suite(ex.EVENTS_CONTRACT, events(amount=[None, None, -5.0, 2_000_000.0, 42.5, None]))
    [failed] = result.failed
    assert failed.kwargs == {"min_value": 0.0, "max_value": 1_000_000.0}
    assert failed.unexpected_count == 2
    assert failed.unexpected_percent == pytest.approx(200 / 3)  # of the three non-null amounts
    assert failed.unexpected_values == ("-5.0", "2000000.0")
    assert failed.observed_value is None


USER_DEFECTS = {
    "age 200": ({"age": [34, None, 200, 150]}, ("expect_column_values_to_be_between", "age"), ("200.0",)),
    "bad email": (
        {"email": ["ann@example.com", "not-an-email", "c@x.io", "d_d@example.org"]},
        ("expect_column_values_to_match_regex", "email"),
        ("not-an-email",),
    ),
    "null email": (
        {"email": ["ann@example.com", None, "c@x.io", "d_d@example.org"]},
        ("expect_column_values_to_not_be_null", "email"),
        ("null",),
    ),
    "null signup_time": (
        {"signup_time": [datetime(2023, 1, 1, tzinfo=UTC), None, None, datetime(2023, 4, 1, tzinfo=UTC)]},
        ("expect_column_values_to_not_be_null", "signup_time"),
        ("null",),
    ),
    "duplicated user_id": (
        {"user_id": ["u1", "u2", "u1", "u_4"]},
        ("expect_column_values_to_be_unique", "user_id"),
        ("u1",),
    ),
}


@pytest.mark.parametrize(("changes", "expected", "values"), USER_DEFECTS.values(), ids=USER_DEFECTS)
def test_each_user_defect_fails_exactly_its_expectation(
    changes: dict, expected: tuple[str, str], values: tuple[str, ...]
) -> None:
    result = ex.run_suite(ex.USERS_CONTRACT, users(**changes))
    assert failures(result) == [expected]
    assert result.failed[0].unexpected_values == values


def test_the_email_pattern_runs_without_warnings_and_anchors_at_the_very_end() -> None:
    ex.run_suite(ex.USERS_CONTRACT, users())  # GX's own import-time warnings are not ours
    frame = users(email=["ann@example.com", "b@mail.example.co.uk\n", "c@x.io", "d_d@example.org"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = ex.run_suite(ex.USERS_CONTRACT, frame)
    assert failures(result) == [("expect_column_values_to_match_regex", "email")]
    assert result.failed[0].unexpected_values == ("b@mail.example.co.uk\n",)


def test_a_mean_amount_far_outside_its_bounds_is_a_statistics_warning_only() -> None:
    frame = events(amount=[None, None, 5_000.0, 7_000.0, 6_000.0, None])
    assert ex.run_suite(ex.EVENTS_CONTRACT, frame).success
    result = ex.run_suite(ex.EVENTS_STATISTICS, frame)
    assert result.severity == ex.WARN
    assert failures(result) == [("expect_column_mean_to_be_between", "amount")]
    [failed] = result.failed
    assert failed.observed_value == pytest.approx(6_000.0)
    assert failed.kwargs == {"min_value": 1.0, "max_value": 500.0}
    assert failed.unexpected_count is None


def test_the_mean_bounds_are_parameters() -> None:
    result = ex.run_suite(ex.EVENTS_STATISTICS, events(), parameters={"mean_amount_max": 30.0})
    [failed] = result.failed
    assert failed.kwargs == {"min_value": 1.0, "max_value": 30.0}
    assert failed.observed_value == pytest.approx((42.5 + 19.99 + 42.5) / 3)
    assert ex.run_suite(ex.EVENTS_STATISTICS, events()).success  # the override did not stick
    with pytest.raises(ValueError, match="mean_amount_mx"):
        ex.run_suite(ex.EVENTS_STATISTICS, events(), parameters={"mean_amount_mx": 30.0})


def test_purchases_without_amounts_are_a_statistics_warning() -> None:
    frame = events(amount=[None, None, 42.5, None, 42.5, None])
    assert ex.run_suite(ex.EVENTS_CONTRACT, frame).success
    result = ex.run_suite(ex.EVENTS_STATISTICS, frame)
    assert failures(result) == [("expect_column_values_to_not_be_null", "amount")]
    [failed] = result.failed
    assert failed.unexpected_count == 1  # among the 3 purchases and cancellations, not the 6 events
    assert failed.unexpected_percent == pytest.approx(100 / 3)


@pytest.mark.parametrize(
    ("suite", "make"), [(ex.EVENTS_CONTRACT, events), (ex.USERS_CONTRACT, users), (ex.EVENTS_STATISTICS, events)]
)
def test_a_day_without_rows_passes_every_suite(suite: str, make: Callable[[], pl.DataFrame]) -> None:
    # A source may send nothing on a day (profiles do not change daily): that is for the lag checks to judge.
    result = ex.run_suite(suite, make().clear())
    assert result.success and result.failed == () and result.evaluated == 0
    assert result.as_metadata()["rows"] == 0
    assert result.describe() == f"No rows: nothing for `{suite}` to judge."


def test_a_missing_column_is_reported_not_raised() -> None:
    result = ex.run_suite(ex.USERS_CONTRACT, users().drop("email"))
    assert failures(result) == [
        ("expect_column_values_to_not_be_null", "email"),
        ("expect_column_values_to_match_regex", "email"),
    ]
    assert all('"email"' in f.exception and "does not exist" in f.exception for f in result.failed)
    assert "not evaluated" in result.describe()


def test_metadata_is_json_with_integer_counts_and_a_readable_listing() -> None:
    frame = events(
        user_id=["u1", None, "u1", "u 3", "u_4", "u2"],
        amount=[None, None, -5.0, 19.99, 42.5, None],
        event_id=["e1", "e1", "e3", "e4", "e5", "e6"],
    )
    result = ex.run_suite(ex.EVENTS_CONTRACT, frame)
    metadata = result.as_metadata()
    assert json.loads(json.dumps(metadata, allow_nan=False)) == metadata
    assert metadata["suite"] == ex.EVENTS_CONTRACT
    assert metadata["severity"] == ex.ERROR
    assert (metadata["rows"], metadata["expectations_evaluated"], metadata["expectations_failed"]) == (6, 8, 4)
    assert all(type(metadata[k]) is int for k in ("rows", "expectations_evaluated", "expectations_failed"))
    assert isinstance(metadata["validation_seconds"], float)
    lines = metadata["failures"].splitlines()
    # In the suite's declared order, whatever order GX evaluated them in.
    assert lines == [
        "- `expect_column_values_to_not_be_null` user_id: 1 unexpected (16.67%), e.g. null",
        "- `expect_column_values_to_be_between` amount (min_value=0.0, max_value=1000000.0):"
        ' 1 unexpected (33.33%), e.g. "-5.0"',
        "- `expect_column_values_to_match_regex` user_id (regex=^[A-Za-z0-9][A-Za-z0-9_.:\\-]*\\Z):"
        ' 1 unexpected (20.00%), e.g. "u 3"',
        '- `expect_column_values_to_be_unique` event_id: 2 unexpected (33.33%), e.g. "e1"',
    ]
    for failed in result.failed:
        json.dumps(failed.kwargs, allow_nan=False)


def test_calls_share_nothing_but_the_suite() -> None:
    dirty = events(event_type=["view", "buy", "purchase", "purchase", "cancellation", "signup"])
    first = ex.run_suite(ex.EVENTS_CONTRACT, dirty)
    assert ex.run_suite(ex.EVENTS_CONTRACT, events()).success
    bigger = pl.concat([dirty, dirty.with_columns(pl.col("event_id") + "b")])
    again = ex.run_suite(ex.EVENTS_CONTRACT, bigger)
    assert first.failed[0].unexpected_count == 1
    assert again.failed[0].unexpected_count == 2
    assert again.rows == 12
    # GX would otherwise keep every result and the last dataframe for the life of the process.
    validation = ex._VALIDATIONS[ex.EVENTS_CONTRACT]
    assert ex._CONTEXT.validation_results_store.list_keys() == []
    assert validation.data.data_asset.datasource.get_execution_engine().batch_manager.batch_data_cache == {}


def test_an_unknown_suite_is_refused() -> None:
    with pytest.raises(ValueError, match="no expectation suite 'orders'"):
        ex.run_suite("orders", events())


def test_importing_the_module_loads_neither_great_expectations_nor_dagster() -> None:
    code = (
        "import sys, ai_pipeline.lib.ingest.expectations; "
        "print(sorted(m for m in ('great_expectations', 'dagster', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
