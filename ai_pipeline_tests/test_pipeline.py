"""The daily job through Dagster into a temporary warehouse: counts, checks, marts and idempotency."""

from __future__ import annotations

import shutil
from datetime import date

import dagster as dg
import duckdb
import polars as pl
import pytest

from ai_pipeline.defs import build_defs
from ai_pipeline.defs.keys import DAILY_JOB
from ai_pipeline.lib.ingest.sample import generate
from ai_pipeline.settings import Settings

# The slow tier (not in `make test-fast`): Dagster runs of the whole daily job, dbt included.
pytestmark = pytest.mark.slow

DAY, NEXT = date(2024, 2, 1), date(2024, 2, 2)
TABLES = [
    "raw_landing_events",
    "raw_landing_users",
    "validated_events",
    "quarantined_events",
    "validated_users",
    "quarantined_users",
    "fct_user_daily_activity",
]
FULL_REBUILDS = {"stg_users", "dim_users"}


def _table(settings: Settings, table: str) -> pl.DataFrame:
    with duckdb.connect(str(settings.warehouse), read_only=True) as conn:
        frame = conn.execute(f"select * from {table}").pl()
    # Ingestion time is when a run read the row, the one column that legitimately differs between runs.
    return frame.drop("_ingested_at", strict=False).sort(frame.drop("_ingested_at", strict=False).columns)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("home"), start_date=DAY)
    days = generate(settings.landing, DAY, NEXT, events_per_day=400, users=80, dirty_rate=0.03)
    job = build_defs(settings).resolve_job_def(DAILY_JOB)
    instance = dg.DagsterInstance.ephemeral()
    first = job.execute_in_process(partition_key=DAY.isoformat(), instance=instance)
    snapshot = {t: _table(settings, t) for t in TABLES}
    again = job.execute_in_process(partition_key=DAY.isoformat(), instance=instance)
    return settings, days, first, again, snapshot


def test_runs_succeed_and_every_check_is_recorded_per_partition(pipeline):
    _, _, first, again, _ = pipeline
    assert first.success and again.success
    evaluations = first.get_asset_check_evaluations()
    names = {(e.asset_key.to_user_string(), e.check_name) for e in evaluations}
    assert ("validated_events", "rows_in_equal_valid_plus_quarantined") in names
    assert ("validated_events", "great_expectations_events_contract") in names
    assert ("raw_landing_events", "schema_matches_contract") in names
    explained = next(
        e
        for e in evaluations
        if e.check_name == "every_row_has_reason_and_raw_record"
        and e.asset_key.to_user_string() == "quarantined_events"
    )
    assert explained.passed
    reason_counts = explained.metadata["reasons_by_field_and_rule"].value
    assert sum(reason_counts.values()) >= 12 and "event_time:too_late" in reason_counts
    assert any(name.startswith("not_null") or "unique" in name for _, name in names)  # dbt tests
    # Every check is recorded for the day, except those of the dbt models rebuilt in full (not partitioned).
    assert {e.partition for e in evaluations if e.asset_key.to_user_string() not in FULL_REBUILDS} == {DAY.isoformat()}
    assert {e.partition for e in evaluations if e.asset_key.to_user_string() in FULL_REBUILDS} == {None}
    blocking_failures = [
        e
        for e in evaluations
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR and e.check_name != "schema_matches_contract"
    ]
    assert blocking_failures == []


def test_conservation_holds_in_the_warehouse(pipeline):
    settings, days, *_ = pipeline
    with duckdb.connect(str(settings.warehouse), read_only=True) as conn:
        raw = sum(
            conn.execute(f"select count(*) from {t} where partition_date = ?", [DAY]).fetchone()[0]
            for t in ("raw_landing_events", "raw_online_retail_events", "raw_operational_events", "raw_api_events")
        )
        valid = conn.execute("select count(*) from validated_events where partition_date = ?", [DAY]).fetchone()[0]
        quarantined = conn.execute(
            "select count(*) from quarantined_events where partition_date = ?", [DAY]
        ).fetchone()[0]
    assert raw == days[0].event_rows
    assert raw == valid + quarantined
    assert quarantined >= round(0.03 * 400)


def test_unconfigured_sources_say_so_and_contribute_nothing(pipeline):
    _, _, first, _, _ = pipeline
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in first.get_asset_materialization_events()}
    for name in ("raw_api_events", "raw_operational_events"):
        assert meta[name]["configured"].value is False
        assert meta[name]["dagster/row_count"].value == 0


def test_marts_agree_with_validated_events(pipeline):
    settings, *_ = pipeline
    with duckdb.connect(str(settings.warehouse), read_only=True) as conn:
        events, amount = conn.execute(
            "select count(*), coalesce(sum(amount::decimal(38, 9)), 0) from validated_events where partition_date = ?",
            [DAY],
        ).fetchone()
        fct_events, fct_amount = conn.execute(
            "select sum(event_count), sum(amount_sum) from fct_user_daily_activity where activity_date = ?", [DAY]
        ).fetchone()
    assert fct_events == events > 0
    assert fct_amount == amount  # exact: both DECIMAL(38, 9)


def test_rematerializing_a_partition_is_idempotent(pipeline):
    settings, _, _, _, snapshot = pipeline
    for table, before in snapshot.items():
        assert _table(settings, table).equals(before), table


def test_a_day_without_profiles_succeeds(tmp_path):
    # Profiles do not change every day: events arrive, no user file does. Nothing fails for that.
    settings = Settings(home=tmp_path, start_date=DAY)
    generate(settings.landing, DAY, NEXT, events_per_day=200, users=40, dirty_rate=0.0)
    shutil.rmtree(settings.landing / "users" / NEXT.isoformat())
    job = build_defs(settings).resolve_job_def(DAILY_JOB)
    instance = dg.DagsterInstance.ephemeral()
    assert job.execute_in_process(partition_key=DAY.isoformat(), instance=instance).success
    result = job.execute_in_process(partition_key=NEXT.isoformat(), instance=instance)
    assert result.success
    checks = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    users = checks[("validated_users", "great_expectations_users_contract")]
    assert users.passed and users.description == "0 of 0 expectations failed"
    assert checks[("validated_users", "rows_in_equal_valid_plus_quarantined")].metadata["rows_in"].value == 0
    assert all(e.passed for e in checks.values() if e.severity == dg.AssetCheckSeverity.ERROR)
