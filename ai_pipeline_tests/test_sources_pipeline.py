"""All three kinds of source in one partition, through Dagster: files, the operational table and the API.

Duplicates across sources are resolved deterministically (first by source name, then file, then line/id) and
conservation holds over the union.
"""

from __future__ import annotations

import json
from datetime import date

import dagster as dg
import duckdb

from ai_pipeline.defs.ingest.assets import ingest_assets
from ai_pipeline.defs.ingest.checks import ingest_checks
from ai_pipeline.defs.keys import UNIQUE_ACROSS_DAYS_CHECK
from ai_pipeline.defs.policy import daily_partitions
from ai_pipeline.defs.resources import EVENTS_API, OPS_DB, EventsApi, OperationalDatabase, embedded_resources
from ai_pipeline.lib.ingest import ops_db
from ai_pipeline.settings import Settings
from ai_pipeline.sources import load_sources
from ai_pipeline_tests.conftest import http_server, landing_zone

DAY = date(2024, 1, 5)
RAW_EVENTS = ["raw_landing_events", "raw_online_retail_events", "raw_operational_events", "raw_api_events"]


def _event(event_id: str, hour: int, amount: str | None, user: str = "u1") -> dict:
    return {
        "event_id": event_id,
        "user_id": user,
        "event_type": "purchase",
        "event_time": f"2024-01-05T{hour:02d}:00:00Z",
        "amount": amount,
    }


def test_three_sources_one_partition(tmp_path, pg_dsn, pg_schema):
    table = f"{pg_schema}.user_events"
    ops_db.create_events_table(pg_dsn, table)
    ops_db.insert_events(
        pg_dsn,
        table,
        [
            _event("ops-1", 9, "10.00"),
            _event("shared-1", 10, "99.00"),
            _event("ops-bad", 11, "-3.00"),
            _event("ops-other-day", 0, "1.00") | {"event_time": "2024-01-06T00:00:00Z"},
        ],
    )
    page = {"items": [_event("shared-1", 10, "5.00"), _event("api-1", 12, "7.50")], "next_page": None}
    landing = tmp_path / "landing" / "events" / DAY.isoformat()
    landing.mkdir(parents=True)
    (landing / "web.csv").write_text(
        "event_id,user_id,event_type,event_time,amount\nfile-1,u2,click,2024-01-05T08:00:00Z,\n"
        "ops-1,u1,purchase,2024-01-05T09:00:00Z,10.00\n"
    )

    def respond(path: str, query: dict, headers: dict):
        assert query["date"] == DAY.isoformat()
        return 200, {}, json.dumps(page)

    with http_server(respond) as base:
        settings = Settings(home=tmp_path)
        partitions = daily_partitions(settings)
        checks = ingest_checks("events", RAW_EVENTS, suites={}, partitions=partitions)
        result = dg.materialize(
            [*ingest_assets(settings, partitions, load_sources()), checks],
            partition_key=DAY.isoformat(),
            resources={
                **embedded_resources(settings),
                **landing_zone(settings),
                OPS_DB: OperationalDatabase(dsn=pg_dsn, table=table),
                EVENTS_API: EventsApi(url=f"{base}/events"),
            },
            selection=[*RAW_EVENTS, "validated_events", "quarantined_events"],
            raise_on_error=False,
        )
    with duckdb.connect(str(settings.warehouse), read_only=True) as conn:
        valid = dict(conn.execute("select event_id, _source from validated_events").fetchall())
        quarantined = conn.execute(
            "select event_id, _source, reasons[1].rule, reasons[1].message from quarantined_events order by all"
        ).fetchall()
        amount = conn.execute("select amount from validated_events where event_id = 'shared-1'").fetchone()[0]
    assert valid == {
        "file-1": "landing_events",
        "ops-1": "landing_events",
        "api-1": "http_api",
        "shared-1": "http_api",
    }
    assert amount == 5.0  # the API's copy wins: sources are ranked by name, then file, then line/id
    assert [(q[0], q[1], q[2]) for q in quarantined] == [
        ("ops-1", "operational_db", "duplicate"),
        ("ops-bad", "operational_db", "ge"),
        ("shared-1", "operational_db", "duplicate"),
    ]
    messages = {q[0]: q[3] for q in quarantined}
    assert messages["ops-1"].startswith("identical duplicate of landing_events:events/2024-01-05/web.csv:")
    assert messages["shared-1"].startswith("conflicting duplicate of http_api:")
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evaluations["rows_in_equal_valid_plus_quarantined"].passed
    assert evaluations["rows_in_equal_valid_plus_quarantined"].metadata["rows_in"].value == 7
    assert evaluations["duplicate_keys_resolved"].metadata["identical_duplicates"].value == 1
    assert evaluations["duplicate_keys_resolved"].metadata["conflicting_duplicates"].value == 1
    # 3 of 7 rows is far above 20%, but 7 rows are too few to block a day on: it warns, and says why.
    rate = evaluations["quarantine_rate_below_threshold"]
    assert not rate.passed and rate.severity == dg.AssetCheckSeverity.WARN
    assert rate.description.startswith(
        "3/7 rows quarantined (42.86%), above 20% but too few rows to block the day on: event_id:duplicate x2 "
        "(first: postgresql://"
    )
    assert "amount:ge x1" in rate.description
    assert result.success


def test_an_event_id_that_another_day_holds_too_is_reported(tmp_path):
    """Rows land on their own day, so an id on two days is one id with two times (a reused or re-timed event)."""
    days = {"2024-01-05": "e-1,u1,click,2024-01-05T08:00:00Z,\n", "2024-01-06": "e-1,u1,click,2024-01-06T09:00:00Z,\n"}
    for day, rows in days.items():
        folder = tmp_path / "landing" / "events" / day
        folder.mkdir(parents=True)
        (folder / "web.csv").write_text("event_id,user_id,event_type,event_time,amount\n" + rows)
        (folder / "_SUCCESS").touch()
    settings = Settings(home=tmp_path, start_date=DAY)
    partitions = daily_partitions(settings)
    checks = ingest_checks("events", RAW_EVENTS, suites={}, partitions=partitions, unique_key="event_id")
    verdicts = {}
    for day in days:
        result = dg.materialize(
            [*ingest_assets(settings, partitions, load_sources()), checks],
            partition_key=day,
            resources={**embedded_resources(settings), **landing_zone(settings)},
            selection=["raw_landing_events", "validated_events", "quarantined_events"],
        )
        verdicts[day] = next(
            e for e in result.get_asset_check_evaluations() if e.check_name == UNIQUE_ACROSS_DAYS_CHECK
        )
    assert verdicts["2024-01-05"].passed  # the 6th had not landed yet
    second = verdicts["2024-01-06"]
    assert not second.passed and second.severity == dg.AssetCheckSeverity.WARN
    assert second.metadata["repeated_keys"].value == 1
    assert second.description == "1 event_id values also on another day, e.g. e-1 also on 2024-01-05"
