"""The feature lane through Dagster: daily partials -> window features -> online store, with their checks.

validated_events is written straight into a temporary warehouse (the ingest lane has its own tests), then the
three feature assets are materialized day by day on one instance, as a daily schedule or backfill would.
"""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg
import duckdb
import polars as pl
import polars.selectors as cs
import pytest

from ai_pipeline.defs import build_defs, keys
from ai_pipeline.defs.keys import PARTITION_LAG_CHECK
from ai_pipeline.defs.resources import ONLINE_STORE, OnlineStore, resources_from_env
from ai_pipeline.lib.feature_store import features
from ai_pipeline.lib.ingest.sample import clean_events
from ai_pipeline.settings import PROJECT_ROOT, Settings
from ai_pipeline_tests.conftest import execute_days

# The slow tier (not in `make test-fast`): Dagster runs of the feature lane over weeks.
pytestmark = pytest.mark.slow

START = date(2024, 3, 1)
DAYS = 21
SHIFT_FROM = START + timedelta(days=14)  # amounts x5 from here on
LAG = 7
ASSETS = [keys.USER_DAILY_AGGREGATES, keys.USER_FEATURE_STATE, keys.USER_WINDOW_FEATURES, keys.ONLINE_USER_FEATURES]


def _events(start: date, end: date) -> pl.DataFrame:
    events = clean_events(start, end, events_per_day=600, users=250, seed=7)
    shifted = pl.col("event_time").dt.date() >= SHIFT_FROM
    return events.with_columns(
        pl.when(shifted).then(pl.col("amount") * 5).otherwise(pl.col("amount")).alias("amount"),
        pl.col("event_time").dt.date().alias("partition_date"),
    )


def _write_validated(settings: Settings, events: pl.DataFrame) -> None:
    with duckdb.connect(str(settings.warehouse)) as conn:
        conn.execute("create or replace table main.validated_events as select * from events")


def _materialize(
    defs: dg.Definitions, instance: dg.DagsterInstance, day: date, lag: int = LAG, last: date | None = None
):
    """One run of the lane for `day`, or for the range `day`..`last` as a backfill run of the range would."""
    selected = {dg.AssetKey(a) for a in ASSETS}
    checks = {
        k
        for k in defs.resolve_asset_graph().asset_check_keys
        if k.asset_key in selected and k.name != PARTITION_LAG_CHECK
    }
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=selected, asset_check_selection=checks
    )
    config = {"ops": {keys.USER_WINDOW_FEATURES: {"config": {"drift_reference_lag_days": lag}}}}
    return execute_days(job, instance, day, last, run_config=config)


def _checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _warehouse(settings: Settings, query: str, params=None) -> pl.DataFrame:
    with duckdb.connect(str(settings.warehouse), read_only=True) as conn:
        frame = conn.execute(query, params or []).pl()
    return frame.with_columns(cs.datetime(time_zone="*").dt.convert_time_zone("UTC"))


@pytest.fixture(scope="module")
def lane(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("home"), start_date=START)
    settings.home.mkdir(parents=True, exist_ok=True)
    events = _events(START, START + timedelta(days=DAYS - 1))
    _write_validated(settings, events)
    defs = build_defs(settings)
    instance = dg.DagsterInstance.ephemeral()
    results = {}
    for n in range(DAYS):
        day = START + timedelta(days=n)
        results[day] = _materialize(defs, instance, day)
    return settings, events, defs, instance, results


def test_every_day_materializes_with_passing_blocking_checks(lane):
    _, _, _, _, results = lane
    for day, result in results.items():
        assert result.success, day
        checks = _checks(result)
        assert {
            keys.PARTIALS_CHECK,
            keys.STATE_CHECK,
            keys.NULLS_CHECK,
            keys.RANGES_CHECK,
            keys.ROWS_CHECK,
            keys.COMPLETENESS_CHECK,
            keys.DRIFT_CHECK,
            keys.CONSISTENCY_CHECK,
        } <= set(checks)
        for name in (
            keys.PARTIALS_CHECK,
            keys.STATE_CHECK,
            keys.NULLS_CHECK,
            keys.RANGES_CHECK,
            keys.ROWS_CHECK,
            keys.CONSISTENCY_CHECK,
        ):
            assert checks[name].passed, (day, name, checks[name].description)
        assert {e.partition for e in result.get_asset_check_evaluations()} == {day.isoformat()}


def test_offline_store_equals_the_library_on_all_events(lane):
    settings, events, *_ = lane
    days = [START + timedelta(days=n) for n in (0, 9, DAYS - 1)]
    for day, computed in zip(days, features.run(features.daily_aggregates(events), START, days), strict=True):
        stored = _warehouse(settings, "select * from user_window_features where feature_date = ?", [day])
        assert stored.sort("user_id").equals(computed), day
    counts = _warehouse(settings, "select feature_date, count(*) as n from user_window_features group by 1")
    assert counts.height == DAYS


def test_start_of_history_windows_are_marked_partial(lane):
    _, _, _, _, results = lane
    first = results[START]
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in first.get_asset_materialization_events()}
    assert meta[keys.USER_WINDOW_FEATURES]["partial_window"].value is True
    assert meta[keys.USER_WINDOW_FEATURES]["window_days_in_history"].value == 1
    completeness = _checks(first)[keys.COMPLETENESS_CHECK]
    assert completeness.passed and completeness.metadata["days_before_history"].value == features.HORIZON - 1


def test_drift_is_quiet_before_the_shift_and_fires_after_it(lane):
    _, _, _, _, results = lane
    quiet = _checks(results[SHIFT_FROM - timedelta(days=1)])[keys.DRIFT_CHECK]
    assert quiet.passed and quiet.metadata["status"].value == "ok", quiet.description
    assert quiet.metadata["psi/amount_sum_7d"].value < 0.1
    fired = _checks(results[SHIFT_FROM + timedelta(days=LAG - 1)])[keys.DRIFT_CHECK]
    assert not fired.passed and fired.severity == dg.AssetCheckSeverity.ERROR, fired.description
    assert fired.metadata["psi/amount_sum_7d"].value > 0.25
    assert fired.metadata["psi/event_count_7d"].value < 0.1  # counts did not shift
    early = _checks(results[START + timedelta(days=3)])[keys.DRIFT_CHECK]
    assert early.passed and early.metadata["status"].value == "not enough data"


def test_online_store_holds_the_newest_day_and_ignores_older_ones(lane):
    settings, _, defs, instance, _ = lane
    last = START + timedelta(days=DAYS - 1)
    store = OnlineStore(path=str(settings.online_features)).client()
    assert store.feature_date() == last
    offline = _warehouse(settings, "select * from user_window_features where feature_date = ?", [last])
    assert store.snapshot().equals(offline.sort("user_id"))
    again = _materialize(defs, instance, START + timedelta(days=5))  # an old day, as a backfill would
    assert again.success
    meta = next(
        e.materialization.metadata
        for e in again.get_asset_materialization_events()
        if e.asset_key.to_user_string() == keys.ONLINE_USER_FEATURES
    )
    assert meta["published"].value is False
    assert store.feature_date() == last
    assert _checks(again)[keys.CONSISTENCY_CHECK].passed


def test_rematerializing_a_day_after_later_days_exist_is_identical(lane):
    """Idempotent, and no leakage: later days' partials (and events) are there now and change nothing."""
    settings, _, defs, instance, _ = lane
    day = START + timedelta(days=11)
    query = "select * from user_window_features where feature_date = ? order by user_id"
    before = _warehouse(settings, query, [day])
    assert _materialize(defs, instance, day).success
    assert _warehouse(settings, query, [day]).equals(before)


def test_one_run_over_a_range_equals_one_run_per_day(lane, tmp_path):
    """A backfill run of many days (DAILY_BACKFILL): the same tables, and the same verdicts, each naming its day."""
    settings, events, _, _, per_day = lane
    ranged = Settings(home=tmp_path, start_date=START)
    _write_validated(ranged, events)
    last = START + timedelta(days=DAYS - 1)
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(build_defs(ranged), instance, START, last=last)
    assert result.success
    _assert_checks_target_their_run(result, instance)
    for table, column in [
        (keys.USER_FEATURE_STATE, features.STATE_DATE),
        (keys.USER_WINDOW_FEATURES, features.FEATURE_DATE),
    ]:
        query = f"select * from {table} order by {column}, user_id"
        assert _warehouse(ranged, query).equals(_warehouse(settings, query)), table
    verdicts = sorted((e.partition, e.check_name, e.passed) for e in result.get_asset_check_evaluations())
    expected = sorted(
        (e.partition, e.check_name, e.passed) for r in per_day.values() for e in r.get_asset_check_evaluations()
    )
    assert verdicts == expected
    assert {e.partition for e in result.get_asset_check_evaluations()} == {k.isoformat() for k in per_day}
    drift = [e for e in result.get_asset_check_evaluations() if e.check_name == keys.DRIFT_CHECK]
    assert [e.passed for e in drift].count(False) > 0  # the shift is seen within the range (its reference too)
    again = _materialize(build_defs(ranged), instance, START, last=last)
    assert again.success
    _assert_checks_target_their_run(again, instance)


def _assert_checks_target_their_run(result, instance: dg.DagsterInstance) -> None:
    """Each day's verdict judges that day's materialization by this run (the UI links them), not an older one."""
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == DAYS * len({(e.asset_key, e.check_name) for e in evaluations})
    for evaluation in evaluations:
        latest = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=evaluation.asset_key, asset_partitions=[evaluation.partition]), limit=1
        ).records[0]
        assert latest.run_id == result.run_id
        assert evaluation.target_materialization_data.storage_id == latest.storage_id, evaluation


def test_a_window_with_missing_upstream_days_is_not_published(tmp_path):
    settings = Settings(home=tmp_path, start_date=START)
    _write_validated(settings, _events(START, START + timedelta(days=4)))
    defs = build_defs(settings)
    instance = dg.DagsterInstance.ephemeral()
    aggregates = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={dg.AssetKey(keys.USER_DAILY_AGGREGATES)}
    )
    for n in (0, 1, 3):  # day 2 never materialized
        assert aggregates.execute_in_process(
            partition_key=(START + timedelta(days=n)).isoformat(), instance=instance
        ).success
    day = START + timedelta(days=3)
    result = _materialize(defs, instance, day)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "1 upstream days" in failure.step_failure_data.error.message
    assert str(START + timedelta(days=2)) in failure.step_failure_data.error.message
    tables = _warehouse(settings, "select table_name from information_schema.tables")["table_name"].to_list()
    assert keys.USER_WINDOW_FEATURES not in tables


def test_postgres_online_store_serves_what_the_offline_store_holds(tmp_path, pg_dsn, pg_schema):
    settings = Settings(home=tmp_path, start_date=START)
    online = OnlineStore(backend="postgres", dsn=pg_dsn, table=f"{pg_schema}.online_user_features")
    _write_validated(settings, _events(START, START + timedelta(days=1)))
    defs = build_defs(settings, {ONLINE_STORE: online})
    instance = dg.DagsterInstance.ephemeral()
    for day in (START, START + timedelta(days=1)):
        result = _materialize(defs, instance, day)
        assert result.success and _checks(result)[keys.CONSISTENCY_CHECK].passed
    store = online.client()
    assert store.name == "postgres" and store.feature_date() == START + timedelta(days=1)
    offline = _warehouse(
        settings, "select * from user_window_features where feature_date = ?", [START + timedelta(days=1)]
    )
    users = offline["user_id"].to_list()[:5] + ["nobody"]
    found = store.lookup(users)
    assert found["user_id"].to_list() == users
    assert found.head(5).equals(offline.head(5))
    assert found.row(5, named=True)["event_count_7d"] is None


def test_the_environment_chooses_the_online_backend_and_keeps_its_dsn_a_secret(tmp_path):
    settings = Settings(home=tmp_path)
    embedded = resources_from_env(settings, {})[ONLINE_STORE]
    assert type(embedded.client()).__name__ == "SqliteOnlineStore"
    with pytest.raises(ValueError, match="AI_PIPELINE_ONLINE_DSN"):
        resources_from_env(settings, {"AI_PIPELINE_ONLINE_STORE": "postgres"})
    env = {"AI_PIPELINE_ONLINE_STORE": "postgres", "AI_PIPELINE_ONLINE_DSN": "host=db.internal password=s3cret"}
    postgres = resources_from_env(settings, env)[ONLINE_STORE]
    # The code location's configuration names the variable, never its value (what the UI shows).
    assert postgres.dsn == dg.EnvVar("AI_PIPELINE_ONLINE_DSN") and "s3cret" not in repr(postgres)
    defs = build_defs(settings, {ONLINE_STORE: postgres})
    assert "postgres" in next(s for s in defs.resolve_all_asset_specs() if s.key.path == ["online_user_features"]).kinds


def test_docs_document_the_registry():
    readme = (PROJECT_ROOT / "docs" / "feature-store.md").read_text()
    begin, end = "<!-- features:begin", "<!-- features:end -->"
    documented = readme[readme.index(begin) : readme.index(end)].split("\n", 1)[1].strip()
    assert documented == features.markdown_table(), "docs/feature-store.md's table is stale: paste markdown_table()"
