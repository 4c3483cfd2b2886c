"""The daily job on a Dagster instance stored in a real PostgreSQL database (the top-level dagster.yaml)."""

from __future__ import annotations

from datetime import date

import dagster as dg
import psycopg2
import pytest

from ai_pipeline.defs import build_defs
from ai_pipeline.defs.keys import DAILY_JOB
from ai_pipeline.instance import prepare_instance_home
from ai_pipeline.lib.ingest.sample import generate
from ai_pipeline.settings import Settings

# The slow tier (not in `make test-fast`): the daily job on a PostgreSQL instance.
pytestmark = pytest.mark.slow

DAY = date(2024, 2, 1)


def test_materialization_is_recorded_in_postgres(tmp_path, postgres_instance):
    settings = Settings(home=tmp_path, start_date=DAY)
    generate(settings.landing, DAY, DAY, events_per_day=200, users=40, dirty_rate=0.02)
    home = prepare_instance_home(settings, "postgres")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        result = (
            build_defs(settings)
            .resolve_job_def(DAILY_JOB)
            .execute_in_process(partition_key=DAY.isoformat(), instance=instance)
        )
        assert result.success
        runs = instance.get_runs()
        assert [r.run_id for r in runs] == [result.run_id]
        event = instance.get_latest_materialization_event(dg.AssetKey("validated_events"))
        assert event.asset_materialization.partition == DAY.isoformat()
        checks = [
            e
            for e in instance.all_logs(result.run_id)
            if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ]
        assert len(checks) == len(result.get_asset_check_evaluations()) > 5
    # The rows really are in PostgreSQL, not in a local SQLite file.
    conn = psycopg2.connect(f"host=127.0.0.1 port=5432 dbname={postgres_instance} user=postgres")
    with conn, conn.cursor() as cur:
        cur.execute("select count(*) from runs")
        assert cur.fetchone()[0] == 1
        cur.execute("select count(*) from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION'")
        assert cur.fetchone()[0] >= 10
    conn.close()
    assert not list(home.rglob("*.db"))
