"""The dbt marts through Dagster on a temporary warehouse: exact values, replace-by-window idempotency, checks.

The marts read the feature store's partials, so each run materializes the real `user_daily_aggregates` asset over
the landed validated events, then the dbt models."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, date, datetime

import dagster as dg
import duckdb
import polars as pl
import pytest
from dagster_dbt import DbtProject

from ai_pipeline.defs.features import aggregates_asset
from ai_pipeline.defs.marts import (
    DBT_PROJECT,
    build_dbt_assets,
    dbt_build_args,
    dbt_vars_for_window,
    manifest_is_stale,
    prepare_manifest,
)
from ai_pipeline.defs.policy import DAILY_BACKFILL, daily_partitions
from ai_pipeline.defs.resources import embedded_resources
from ai_pipeline.settings import Settings

# The slow tier (not in `make test-fast`): dbt builds.
pytestmark = pytest.mark.slow

DAY1, DAY2 = "2024-01-01", "2024-01-02"
MODELS = ["stg_users", "fct_user_daily_activity", "dim_users"]
DAILY_MODELS = {"fct_user_daily_activity"}
MARTS = ["fct_user_daily_activity", "dim_users"]

_LINEAGE = "_source varchar, _source_uri varchar, _source_offset bigint, _source_page bigint, _ingested_at timestamptz"
EVENTS_DDL = f"""
create table if not exists main.validated_events (
    event_id varchar, user_id varchar, event_type varchar, event_time timestamptz, amount double,
    category varchar, country varchar, partition_date date, {_LINEAGE}
)"""
USERS_DDL = f"""
create table if not exists main.validated_users (
    user_id varchar, age bigint, email varchar, signup_time timestamptz, country varchar,
    partition_date date, {_LINEAGE}
)"""

# (event_id, user_id, event_type, event_time, amount, category, country, partition_date)
EVENTS = {
    DAY1: [
        ("e1", "u1", "click", "2024-01-01 08:00:00+00", None, "books", "DE", DAY1),
        ("e2", "u1", "purchase", "2024-01-01 09:30:00+00", 10.0, "books", "DE", DAY1),
        ("e3", "u1", "view", "2024-01-01 12:00:00+00", None, "games", "DE", DAY1),
        ("e4", "u2", "signup", "2024-01-01 07:00:00+00", None, None, "US", DAY1),
        # u3 has events but never a profile.
        ("e5", "u3", "purchase", "2024-01-01 23:59:59+00", 5.5, "music", None, DAY1),
    ],
    DAY2: [
        ("e6", "u1", "purchase", "2024-01-02 10:00:00+00", 2.5, None, "DE", DAY2),
        ("e7", "u3", "cancellation", "2024-01-02 11:00:00+00", None, "music", None, DAY2),
        ("e8", "u3", "logout", "2024-01-02 11:05:00+00", None, None, None, DAY2),
    ],
}
# (user_id, age, email, signup_time, country, partition_date)
USERS = {
    DAY1: [
        ("u1", 30, "u1.old@example.com", "2023-12-01 00:00:00+00", "DE", DAY1),
        ("u2", 25, "u2@example.com", "2024-01-01 07:00:00+00", "US", DAY1),
    ],
    # u1 updates their profile on day 2.
    DAY2: [("u1", 31, "u1.new@example.com", "2023-12-01 00:00:00+00", "FR", DAY2)],
}


def _land(settings: Settings, day: str, *, without_user: str | None = None) -> None:
    """What the validation assets would write for `day` (replacing that day), optionally without one user's events."""
    with duckdb.connect(str(settings.warehouse)) as conn:
        conn.execute(EVENTS_DDL)
        conn.execute(USERS_DDL)
        conn.execute("delete from validated_events where partition_date = ?", [day])
        conn.execute("delete from validated_users where partition_date = ?", [day])
        for offset, row in enumerate(r for r in EVENTS[day] if r[1] != without_user):
            conn.execute(
                "insert into validated_events values (?, ?, ?, ?, ?, ?, ?, ?, 'test', 'mem://events', ?, null, now())",
                [*row, offset],
            )
        for offset, row in enumerate(USERS[day]):
            conn.execute(
                "insert into validated_users values (?, ?, ?, ?, ?, ?, 'test', 'mem://users', ?, null, now())",
                [*row, offset],
            )


def _table(settings: Settings, name: str) -> pl.DataFrame:
    with duckdb.connect(str(settings.warehouse), read_only=True) as conn:
        frame = conn.execute(f"select * from main.{name}").pl()
    return frame.sort(frame.columns)


def _rows(frame: pl.DataFrame, columns: list[str]) -> list[tuple]:
    return [tuple(row) for row in frame.select(columns).sort(columns).iter_rows()]


FCT_COLUMNS = ["user_id", "activity_date", "event_count", "purchase_count", "amount_sum", "distinct_categories"]
FCT_DAY1 = [
    ("u1", date(2024, 1, 1), 3, 1, 10.0, 2),
    ("u2", date(2024, 1, 1), 1, 0, 0.0, 0),
    ("u3", date(2024, 1, 1), 1, 1, 5.5, 1),
]
FCT_DAY2 = [
    ("u1", date(2024, 1, 2), 1, 1, 2.5, 0),
    ("u3", date(2024, 1, 2), 2, 0, 0.0, 1),
]
DIM_COLUMNS = [
    "user_id",
    "has_profile",
    "email",
    "age",
    "country",
    "profile_date",
    "first_activity_date",
    "last_activity_date",
    "active_days",
    "total_events",
    "total_purchases",
    "total_amount",
]


# One of each kind of dbt data test, as (asset, check name).
EXPECTED_CHECKS = {
    ("fct_user_daily_activity", "unique_combination_of_columns_fct_user_daily_activity_user_id__activity_date"),
    ("fct_user_daily_activity", "accepted_range_fct_user_daily_activity_amount_sum__0"),
    ("stg_users", "not_null_stg_users_email"),
    ("dim_users", "unique_dim_users_user_id"),
}


@pytest.fixture(scope="module")
def marts(tmp_path_factory):
    """Runs in order, as production would see them, with the marts' contents after each:
    day 1 lands and is built; day 2 lands and is built; day 1 again; both days as one single-run range;
    day 1 re-lands without u2's only event and is built again."""
    settings = Settings(home=tmp_path_factory.mktemp("home"), start_date=date.fromisoformat(DAY1))
    partitions = daily_partitions(settings)
    assets, resources = build_dbt_assets(settings, partitions)
    instance = dg.DagsterInstance.ephemeral()
    results, tables = {}, {}

    def run(name: str, **kwargs) -> None:
        results[name] = dg.materialize(
            [aggregates_asset(partitions), *assets],
            resources={**embedded_resources(settings), **resources},
            instance=instance,
            **kwargs,
        )
        tables[name] = {m: _table(settings, m) for m in MARTS}

    _land(settings, DAY1)
    run("day1", partition_key=DAY1)
    _land(settings, DAY2)
    run("day2", partition_key=DAY2)
    run("day1_again", partition_key=DAY1)
    run("range", tags={"dagster/asset_partition_range_start": DAY1, "dagster/asset_partition_range_end": DAY2})
    _land(settings, DAY1, without_user="u2")
    run("day1_shrunk", partition_key=DAY1)
    return assets, results, tables


def test_every_run_succeeds_and_materializes_every_model(marts):
    _, results, _ = marts
    for name, result in results.items():
        assert result.success, name
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert materialized == {*MODELS, "user_daily_aggregates"}, name


def test_each_model_reports_its_rows_columns_and_lineage(marts):
    _, results, tables = marts
    events = {e.asset_key.to_user_string(): e for e in results["day2"].get_asset_materialization_events()}
    for model in MARTS:
        metadata = events[model].materialization.metadata
        assert metadata["dagster/row_count"].value == tables["day2"][model].height, model
        columns = [c.name for c in metadata["dagster/column_schema"].value.columns]
        assert columns == tables["day2"][model].columns or sorted(columns) == sorted(tables["day2"][model].columns)
    lineage = events["fct_user_daily_activity"].materialization.metadata["dagster/column_lineage"].value
    assert [(d.asset_key.to_user_string(), d.column_name) for d in lineage.deps_by_column["amount_sum"]] == [
        ("user_daily_aggregates", "amount__sum")
    ]


def test_fct_after_each_day_holds_exactly_that_days_activity(marts):
    _, _, tables = marts
    assert _rows(tables["day1"]["fct_user_daily_activity"], FCT_COLUMNS) == FCT_DAY1
    assert _rows(tables["day2"]["fct_user_daily_activity"], FCT_COLUMNS) == sorted(FCT_DAY1 + FCT_DAY2)
    fct = tables["day2"]["fct_user_daily_activity"].filter(pl.col("user_id") == "u1").sort("activity_date")
    assert fct["first_event_at"].to_list() == [
        datetime(2024, 1, 1, 8, 0, tzinfo=UTC),
        datetime(2024, 1, 2, 10, 0, tzinfo=UTC),
    ]
    assert fct["last_event_at"].to_list() == [
        datetime(2024, 1, 1, 12, 0, tzinfo=UTC),
        datetime(2024, 1, 2, 10, 0, tzinfo=UTC),
    ]


def test_dim_takes_the_latest_profile_and_keeps_users_without_one(marts):
    _, _, tables = marts
    d1, d2 = date(2024, 1, 1), date(2024, 1, 2)
    assert _rows(tables["day1"]["dim_users"], DIM_COLUMNS) == [
        ("u1", True, "u1.old@example.com", 30, "DE", d1, d1, d1, 1, 3, 1, 10.0),
        ("u2", True, "u2@example.com", 25, "US", d1, d1, d1, 1, 1, 0, 0.0),
        ("u3", False, None, None, None, None, d1, d1, 1, 1, 1, 5.5),
    ]
    assert _rows(tables["day2"]["dim_users"], DIM_COLUMNS) == [
        ("u1", True, "u1.new@example.com", 31, "FR", d2, d1, d2, 2, 4, 2, 12.5),
        ("u2", True, "u2@example.com", 25, "US", d1, d1, d1, 1, 1, 0, 0.0),
        ("u3", False, None, None, None, None, d1, d2, 2, 3, 1, 5.5),
    ]


def test_rebuilding_a_day_or_the_whole_range_changes_nothing(marts):
    _, _, tables = marts
    for rerun in ("day1_again", "range"):
        for model, before in tables["day2"].items():
            assert tables[rerun][model].equals(before), (rerun, model)


def test_rebuilding_a_day_that_lost_rows_drops_them_and_leaves_other_days_alone(marts):
    _, _, tables = marts
    without_u2 = [row for row in FCT_DAY1 if row[0] != "u2"]
    assert _rows(tables["day1_shrunk"]["fct_user_daily_activity"], FCT_COLUMNS) == sorted(without_u2 + FCT_DAY2)
    u2 = tables["day1_shrunk"]["dim_users"].filter(pl.col("user_id") == "u2")
    assert _rows(u2, DIM_COLUMNS) == [
        ("u2", True, "u2@example.com", 25, "US", date(2024, 1, 1), None, None, 0, 0, 0, 0.0)
    ]


def test_dbt_data_tests_are_passing_asset_checks(marts):
    assets, results, _ = marts
    declared = {(k.asset_key.to_user_string(), k.name) for a in assets for k in a.check_keys}
    assert EXPECTED_CHECKS <= declared
    days = {"day1": [DAY1], "day2": [DAY2], "day1_again": [DAY1], "range": [DAY1, DAY2], "day1_shrunk": [DAY1]}
    for run, result in results.items():
        evaluations = [e for e in result.get_asset_check_evaluations() if e.asset_key.to_user_string() in MODELS]
        assert [e.check_name for e in evaluations if not e.passed] == [], run
        # The daily models' tests: one verdict per check and day (a range's dbt test stands for each day of the
        # range). The full rebuilds' tests: one verdict per run, for no partition.
        recorded = sorted((e.asset_key.to_user_string(), e.check_name, e.partition or "") for e in evaluations)
        expected = [
            (asset, check, day) for asset, check in declared for day in (days[run] if asset in DAILY_MODELS else [""])
        ]
        assert recorded == sorted(expected), run


def test_specs_are_flat_model_keys_in_group_marts_downstream_of_validated_tables(marts):
    assets, _, _ = marts
    daily, full = assets
    specs = {spec.key.to_user_string(): spec for a in assets for spec in a.specs}
    assert set(specs) == set(MODELS)
    for name, spec in specs.items():
        assert spec.group_name == "marts", name
        assert spec.owners == ["team:data-platform"], name
        assert spec.kinds == {"dbt", "duckdb"}, name
        assert spec.description and "select" not in spec.description, name  # the model's own description
        if name in DAILY_MODELS:
            assert isinstance(spec.partitions_def, dg.DailyPartitionsDefinition), name
        else:
            assert spec.partitions_def is None, name
    deps = {name: {d.asset_key.to_user_string() for d in spec.deps} for name, spec in specs.items()}
    assert deps["stg_users"] == {"validated_users"}
    assert deps["fct_user_daily_activity"] == {"user_daily_aggregates"}
    assert deps["dim_users"] == {"stg_users", "fct_user_daily_activity"}
    assert specs["dim_users"].description.startswith("One row per user seen anywhere")
    assert {s.key.to_user_string() for s in daily.specs} == DAILY_MODELS
    assert daily.backfill_policy == DAILY_BACKFILL


def test_the_manifest_is_prepared_by_dagster_dbt_and_goes_stale_when_a_model_changes(tmp_path):
    shutil.copytree(DBT_PROJECT.project_dir, tmp_path / "dbt", ignore=shutil.ignore_patterns("target", "logs"))
    project = DbtProject(tmp_path / "dbt", profiles_dir=tmp_path / "dbt")
    assert manifest_is_stale(project)  # a fresh clone: no manifest
    manifest = prepare_manifest(project)
    assert json.loads(manifest.read_text())["nodes"]["model.ai_pipeline.dim_users"]["name"] == "dim_users"
    assert not manifest_is_stale(project)
    model = tmp_path / "dbt" / "models" / "marts" / "dim_users.sql"
    later = manifest.stat().st_mtime + 10
    os.utime(model, (later, later))
    assert manifest_is_stale(project)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC), ("2024-01-01", "2024-01-02")),
        (datetime(2024, 1, 30, tzinfo=UTC), datetime(2024, 2, 3, tzinfo=UTC), ("2024-01-30", "2024-02-03")),
        (datetime(2023, 12, 31, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC), ("2023-12-31", "2024-01-01")),
    ],
)
def test_dbt_vars_for_window_is_the_half_open_day_range(start, end, expected):
    assert dbt_vars_for_window(start, end) == {"min_date": expected[0], "max_date": expected[1]}


def test_dbt_vars_for_window_rejects_an_empty_window():
    day = datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="empty partition window"):
        dbt_vars_for_window(day, day)


def test_dbt_build_args_carry_the_window_and_the_warehouse(tmp_path):
    args = dbt_build_args({"min_date": "2024-01-01", "max_date": "2024-01-02"}, tmp_path / "w.duckdb")
    assert args[:2] == ["build", "--vars"]
    assert args[2] == (
        f'{{"max_date": "2024-01-02", "min_date": "2024-01-01", "warehouse_path": "{tmp_path / "w.duckdb"}"}}'
    )
