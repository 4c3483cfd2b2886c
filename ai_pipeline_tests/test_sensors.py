"""The raw-data sensors on real files and a real PostgreSQL table, ticked against a real temporary instance."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ai_pipeline.defs import build_defs
from ai_pipeline.defs.ingest.sensors import BEFORE_START, IN_RANGE, NOT_YET, day_status
from ai_pipeline.defs.keys import DAILY_JOB, LANE_TAG, LATE_ROWS_SENSOR, OPERATIONAL_SENSOR, TRAINING_JOB
from ai_pipeline.defs.policy import daily_partitions
from ai_pipeline.defs.resources import OPS_DB, OperationalDatabase
from ai_pipeline.lib.ingest import landing, ops_db
from ai_pipeline.settings import Settings
from ai_pipeline_tests.conftest import execute_days, landing_zone

START = date(2024, 1, 1)
CSV = "event_id,user_id,event_type,event_time\ne1,u1,click,2024-01-05T10:00:00Z\n"


@pytest.fixture(scope="module")
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def _write(path: Path, text: str = CSV) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _tick(defs: dg.Definitions, name: str, instance: dg.DagsterInstance, cursor: str | None):
    sensor = defs.resolve_sensor_def(name)
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources)
    return sensor(context)


def _ops(dsn: str, table: str) -> dict[str, OperationalDatabase]:
    return {OPS_DB: OperationalDatabase(dsn=dsn, table=table)}


def _target(defs: dg.Definitions, name: str) -> set[dg.AssetKey]:
    return set(defs.resolve_job_def(defs.resolve_sensor_def(name).job_name).asset_layer.executable_asset_keys)


def _requests(result) -> dict[str, str]:
    return {r.partition_key: r.run_key for r in result.run_requests}


def test_day_status_says_why_a_day_is_not_a_partition():
    partitions = daily_partitions(Settings(start_date=START))
    today = datetime.now(UTC).date()
    assert day_status(partitions, date(2024, 1, 5), today) == (IN_RANGE, "")
    status, why = day_status(partitions, date(2023, 12, 31), today)
    assert status == BEFORE_START and "before the first partition 2024-01-01" in why
    status, why = day_status(partitions, today + timedelta(days=2), today)
    assert status == NOT_YET and "future" in why
    # Whether today is a partition depends on the clock; its wording is checked with a fixed "today".
    assert day_status(partitions, today + timedelta(days=1), today + timedelta(days=1)) == (
        NOT_YET,
        "today is not a partition until it ends (UTC): requested then",
    )


def test_scan_fingerprints_days_from_stat_and_reports_what_is_not_a_day(tmp_path):
    root = tmp_path / "landing"
    a = _write(root / "events" / "2024-01-05" / "a.csv")
    _write(root / "events" / "2024-01-05" / "b.jsonl", '{"event_id": "e2"}\n')
    _write(root / "events" / "2024-01-05" / ".uploading.csv")  # hidden: a file still being written
    _write(root / "events" / "2024-01-05" / "notes.txt", "not data")
    _write(root / "events" / "2024-02-30" / "c.csv")
    _write(root / "events" / "20240106" / "d.csv")
    _write(root / "events" / "loose.csv")
    (root / "events" / "2024-01-07").mkdir()
    scan = landing.scan_landing(root, "events", settle_seconds=0)
    # A refused file is part of the day's state: reading the day is what fails its file check, loudly.
    assert list(scan.fingerprints) == [date(2024, 1, 5)] and scan.files == {date(2024, 1, 5): 3}
    assert sorted(scan.issues) == [
        "events/2024-01-05/notes.txt: refused, unsupported file type, expected one of ['.csv', '.json', '.jsonl', "
        "'.ndjson', '.parquet', '.pq', '.tsv'] (optionally compressed)",
        "events/2024-02-30: not a day folder; files are read from events/YYYY-MM-DD/",
        "events/20240106: not a day folder; files are read from events/YYYY-MM-DD/",
        "events/loose.csv: not a day folder; files are read from events/YYYY-MM-DD/",
    ]
    before = scan.fingerprints[date(2024, 1, 5)]
    assert landing.scan_landing(root, "events", settle_seconds=0).fingerprints[date(2024, 1, 5)] == before
    stat = a.stat()
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns - 1_000_000_000))  # touched, same content
    assert landing.scan_landing(root, "events", settle_seconds=0).fingerprints[date(2024, 1, 5)] != before
    assert landing.scan_landing(root, "missing") == landing.LandingScan({}, {}, [])


def test_landing_sensor_requests_each_state_of_a_day_once_and_reports_other_days(tmp_path, instance):
    settings = Settings(home=tmp_path, start_date=START)
    events = settings.landing / "events"
    _write(events / "2024-01-05" / "a.csv")
    _write(events / "2024-01-05" / "b.csv")
    _write(events / "2024-01-06" / "a.csv")
    _write(events / "2023-12-31" / "old.csv")
    future = (datetime.now(UTC).date() + timedelta(days=2)).isoformat()
    _write(events / future / "early.csv")
    defs = build_defs(settings, landing_zone(settings))
    assert _target(defs, "landing_events_files") == {dg.AssetKey("raw_landing_events")}
    assert defs.resolve_sensor_def("landing_events_files").default_status == dg.DefaultSensorStatus.RUNNING

    first = _tick(defs, "landing_events_files", instance, None)
    fingerprints = landing.scan_landing(settings.landing, "events", settle_seconds=0).fingerprints
    assert _requests(first) == {
        "2024-01-05": f"landing_events:2024-01-05:{fingerprints[date(2024, 1, 5)]}",
        "2024-01-06": f"landing_events:2024-01-06:{fingerprints[date(2024, 1, 6)]}",
    }

    quiet = _tick(defs, "landing_events_files", instance, first.cursor)
    assert quiet.run_requests == []
    assert "events/2023-12-31 (1 files): before the first partition 2024-01-01" in quiet.skip_reason.skip_message
    assert f"events/{future} (1 files): a day in the future" in quiet.skip_reason.skip_message

    # Two files of a day change: the day is requested once, under a new run key.
    for name in ("a.csv", "b.csv"):
        _write(events / "2024-01-05" / name, CSV + "e9,u2,view,2024-01-05T11:00:00Z\n")
    changed = _tick(defs, "landing_events_files", instance, quiet.cursor)
    assert list(_requests(changed)) == ["2024-01-05"]
    assert _requests(changed)["2024-01-05"] != _requests(first)["2024-01-05"]
    assert _tick(defs, "landing_events_files", instance, changed.cursor).run_requests == []

    # A file removed from a day that keeps others re-reads the day; a day left with no file is only reported.
    (events / "2024-01-05" / "b.csv").unlink()
    removed = _tick(defs, "landing_events_files", instance, changed.cursor)
    assert list(_requests(removed)) == ["2024-01-05"]
    (events / "2024-01-06" / "a.csv").unlink()
    emptied = _tick(defs, "landing_events_files", instance, removed.cursor)
    assert emptied.run_requests == []
    assert "events/2024-01-06: no files left; not re-run" in emptied.skip_reason.skip_message
    assert "2024-01-06" not in _tick(defs, "landing_events_files", instance, emptied.cursor).skip_reason.skip_message

    # The other landing sources have sensors of their own, with nothing to do here.
    users = _tick(defs, "landing_users_files", instance, None)
    assert (
        users.run_requests == []
        and users.skip_reason.skip_message == "no new or changed files in landing/users (0 days)"
    )


def test_landing_sensor_waits_for_files_still_being_written(tmp_path, instance):
    settings = Settings(home=tmp_path, start_date=START)
    day = settings.landing / "events" / "2024-01-05"
    growing = _write(day / "a.csv")
    _write(day / "b.csv")
    old = datetime.now(UTC).timestamp() - 60
    os.utime(day / "b.csv", (old, old))
    defs = build_defs(settings, landing_zone(settings, settle_s=30))
    waiting = _tick(defs, "landing_events_files", instance, None)
    assert waiting.run_requests == []
    assert waiting.skip_reason.skip_message == (
        "events/2024-01-05: waiting for 1 file(s) still being written to stay unchanged for 30 s "
        "(or a _SUCCESS marker): events/2024-01-05/a.csv"
    )
    os.utime(growing, (old, old))  # unchanged for a minute now
    settled = _tick(defs, "landing_events_files", instance, waiting.cursor)
    assert list(_requests(settled)) == ["2024-01-05"]
    # A writer that closes the day with the completion marker is read at once.
    _write(settings.landing / "events" / "2024-01-06" / "a.csv")
    _write(settings.landing / "events" / "2024-01-06" / "_SUCCESS", "")
    closed = _tick(defs, "landing_events_files", instance, settled.cursor)
    assert list(_requests(closed)) == ["2024-01-06"]


def test_landing_request_runs_the_raw_partition_it_names(tmp_path, instance):
    settings = Settings(home=tmp_path, start_date=START)
    _write(settings.landing / "events" / "2024-01-05" / "a.csv")
    defs = build_defs(settings, landing_zone(settings))
    [request] = _tick(defs, "landing_events_files", instance, None).run_requests
    job = defs.resolve_job_def(defs.resolve_sensor_def("landing_events_files").job_name)
    result = job.execute_in_process(partition_key=request.partition_key, instance=instance, tags=request.tags)
    [materialization] = result.asset_materializations_for_node("raw_landing_events")
    assert materialization.partition == "2024-01-05"
    assert materialization.metadata["dagster/row_count"].value == 1
    assert {m.asset_key for m in result.get_asset_materialization_events() if m.asset_key} == {
        dg.AssetKey("raw_landing_events")
    }


def _event(event_id: str, event_time: str | None) -> dict:
    return {"event_id": event_id, "user_id": "u1", "event_type": "click", "event_time": event_time}


def test_rows_after_returns_the_new_rows_utc_days_and_watermark(pg_dsn, pg_schema):
    table = f"{pg_schema}.events"
    ops_db.create_events_table(pg_dsn, table)
    assert ops_db.rows_after(pg_dsn, table, None) == ops_db.NewRows(None, 0, [])
    ops_db.insert_events(
        pg_dsn,
        table,
        [
            _event("a", "2024-01-05T10:00:00Z"),
            _event("b", "2024-01-05T23:30:00-02:00"),  # 2024-01-06 01:30 UTC
            _event("c", None),  # no time: no day, but it moves the watermark
        ],
    )
    assert ops_db.rows_after(pg_dsn, table, None) == ops_db.NewRows(3, 3, [date(2024, 1, 5), date(2024, 1, 6)])
    assert ops_db.rows_after(pg_dsn, table, 1) == ops_db.NewRows(3, 2, [date(2024, 1, 6)])
    assert ops_db.rows_after(pg_dsn, table, 3) == ops_db.NewRows(3, 0, [])


def test_operational_sensor_requests_the_days_of_new_rows(tmp_path, instance, pg_dsn, pg_schema):
    table = f"{pg_schema}.events"
    ops_db.create_events_table(pg_dsn, table)
    future = datetime.now(UTC).date() + timedelta(days=2)
    ops_db.insert_events(
        pg_dsn,
        table,
        [
            _event("a", "2024-01-05T10:00:00Z"),
            _event("b", "2024-01-05T11:00:00Z"),
            _event("c", "2024-01-06T00:00:00Z"),
            _event("d", "2023-12-30T12:00:00Z"),
            _event("e", f"{future.isoformat()}T08:00:00Z"),
        ],
    )
    defs = build_defs(Settings(home=tmp_path, start_date=START), _ops(pg_dsn, table))
    assert _target(defs, OPERATIONAL_SENSOR) == {dg.AssetKey("raw_operational_events")}

    first = _tick(defs, OPERATIONAL_SENSOR, instance, None)
    assert _requests(first) == {
        "2024-01-05": "operational_events:2024-01-05:5",
        "2024-01-06": "operational_events:2024-01-06:5",
    }
    assert first.cursor == f'{{"watermark": 5, "pending": ["{future.isoformat()}"]}}'

    quiet = _tick(defs, OPERATIONAL_SENSOR, instance, first.cursor)
    assert quiet.run_requests == [] and quiet.cursor == first.cursor
    message = quiet.skip_reason.skip_message
    assert f"rows for {future.isoformat()}: a day in the future" in message
    assert "2023-12-30" not in message  # reported once, on the tick that saw the row (it never becomes a day)

    ops_db.insert_events(pg_dsn, table, [_event("f", "2024-01-06T09:00:00Z"), _event("g", "2024-01-07T09:00:00Z")])
    more = _tick(defs, OPERATIONAL_SENSOR, instance, quiet.cursor)
    assert _requests(more) == {
        "2024-01-06": "operational_events:2024-01-06:7",
        "2024-01-07": "operational_events:2024-01-07:7",
    }
    assert '"watermark": 7' in more.cursor
    assert _tick(defs, OPERATIONAL_SENSOR, instance, more.cursor).run_requests == []

    # A waiting day is requested once it has become a partition.
    released = _tick(defs, OPERATIONAL_SENSOR, instance, '{"watermark": 7, "pending": ["2024-01-09"]}')
    assert _requests(released) == {"2024-01-09": "operational_events:2024-01-09:7"}
    assert released.cursor == '{"watermark": 7, "pending": []}'


def test_operational_sensor_reports_rows_before_the_start(tmp_path, instance, pg_dsn, pg_schema):
    table = f"{pg_schema}.events"
    ops_db.create_events_table(pg_dsn, table)
    ops_db.insert_events(pg_dsn, table, [_event("d", "2023-12-30T12:00:00Z")])
    defs = build_defs(Settings(home=tmp_path, start_date=START), _ops(pg_dsn, table))
    result = _tick(defs, OPERATIONAL_SENSOR, instance, None)
    assert result.run_requests == []
    assert result.skip_reason.skip_message.startswith("rows for 2023-12-30: before the first partition 2024-01-01")
    assert result.cursor == '{"watermark": 1, "pending": []}'


def test_sensors_of_unconfigured_sources_say_why_they_do_nothing(tmp_path, instance):
    defs = build_defs(Settings(home=tmp_path, start_date=START))
    sensor = defs.resolve_sensor_def(OPERATIONAL_SENSOR)
    assert sensor.metadata["configured"].value is False
    result = _tick(defs, OPERATIONAL_SENSOR, instance, None)
    assert result.skip_message == "AI_PIPELINE_OPS_DSN is not set: the operational source is not configured"


@pytest.mark.slow  # range runs of the daily job
def test_late_rows_rerun_their_day_and_every_later_one(tmp_path):
    day, newest = date(2024, 1, 5), date(2024, 1, 7)
    settings = Settings(home=tmp_path, start_date=day)
    for n in range(3):
        current = day + timedelta(days=n)
        _write(
            settings.landing / "events" / current.isoformat() / "a.csv",
            CSV.replace("2024-01-05", str(current)).replace("e1,", f"e{n},"),
        )
    defs = build_defs(settings, landing_zone(settings))
    job = defs.resolve_job_def(DAILY_JOB)
    ingest = [dg.AssetKey(k) for k in ("raw_landing_events", "validated_events", "quarantined_events")]
    with dg.instance_for_test() as instance:
        assert execute_days(job, instance, day, newest, asset_selection=ingest).success
        started = _tick(defs, LATE_ROWS_SENSOR, instance, None)
        assert started.run_requests == [] and started.skip_reason.skip_message.startswith("started")

        # Two days later, a file for the newest day also holds rows of the first: they belong to that day.
        late = "e-late,u9,purchase,2024-01-05T18:00:00Z\ne-new,u9,click,2024-01-07T09:00:00Z\n"
        _write(settings.landing / "events" / newest.isoformat() / "b.csv", CSV.splitlines()[0] + "\n" + late)
        raw = job.execute_in_process(
            partition_key=newest.isoformat(), instance=instance, asset_selection=[dg.AssetKey("raw_landing_events")]
        )
        [materialization] = raw.asset_materializations_for_node("raw_landing_events")
        assert materialization.metadata["routed_days"].value == [day.isoformat()]
        # While a run of the same assets is in flight (automation's, of the arrival day), the sensor waits.
        busy = instance.create_run_for_job(
            job,
            status=dg.DagsterRunStatus.STARTED,
            asset_selection={dg.AssetKey("validated_events"), dg.AssetKey("quarantined_events")},
        )
        waiting = _tick(defs, LATE_ROWS_SENSOR, instance, started.cursor)
        assert waiting.run_requests == [] and waiting.cursor == started.cursor
        assert waiting.skip_reason.skip_message == (
            f"late rows for {day}, {newest}: waiting for run(s) {busy.run_id} of {DAILY_JOB}"
        )
        instance.report_run_canceled(busy)
        result = _tick(defs, LATE_ROWS_SENSOR, instance, started.cursor)
        [request] = result.run_requests
        assert request.job_name == DAILY_JOB and request.tags[LANE_TAG] == DAILY_JOB
        assert request.tags["dagster/asset_partition_range_start"] == day.isoformat()
        assert request.tags["dagster/asset_partition_range_end"] == newest.isoformat()
        selected = {key.path[-1] for key in request.asset_selection}
        assert {"validated_events", "fct_user_daily_activity", "user_feature_state", "online_user_features"} <= selected
        assert not any(name.startswith("raw_") for name in selected) and "validated_chat_messages" not in selected
        assert _tick(defs, LATE_ROWS_SENSOR, instance, result.cursor).run_requests == []

        # Late conversation trees re-run the training-data lane's job, not the events lane's.
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                "raw_chat_messages", partition=newest.isoformat(), metadata={"routed_days": [day.isoformat()]}
            )
        )
        [chat] = _tick(defs, LATE_ROWS_SENSOR, instance, result.cursor).run_requests
        assert chat.job_name == TRAINING_JOB and chat.tags[LANE_TAG] == TRAINING_JOB
        assert (chat.tags["dagster/asset_partition_range_start"], chat.tags["dagster/asset_partition_range_end"]) == (
            day.isoformat(),
            newest.isoformat(),
        )
        chat_selected = {key.path[-1] for key in chat.asset_selection}
        assert {"validated_chat_messages", "conversations", "sft_dataset", "preference_pairs"} <= chat_selected
        assert not chat_selected & (selected | {"raw_chat_messages"})

        rerun = job.execute_in_process(instance=instance, tags=request.tags, asset_selection=request.asset_selection)
        assert rerun.success
    with duckdb.connect(str(settings.warehouse), read_only=True) as conn:
        found = conn.execute(
            "select partition_date, _arrival_date from validated_events where event_id = 'e-late'"
        ).fetchall()
        features = conn.execute(
            "select feature_date, event_count_7d from user_window_features where user_id = 'u9' order by 1"
        ).fetchall()
    assert found == [(day, newest)]
    assert features == [(day, 1), (day + timedelta(days=1), 1), (newest, 2)]


def test_a_landing_sensor_started_over_days_already_read_requests_only_what_changed_since(tmp_path):
    settings = Settings(home=tmp_path, start_date=START)
    first, second = date(2024, 1, 5), date(2024, 1, 6)
    for day in (first, second):
        _write(settings.landing / "events" / day.isoformat() / "a.csv")
    defs = build_defs(settings, landing_zone(settings))
    job = defs.resolve_job_def(defs.resolve_sensor_def("landing_events_files").job_name)
    with dg.instance_for_test() as instance:
        # Both days read by a range run the sensor did not request (the CLI, a backfill), then the sensor starts.
        assert execute_days(job, instance, first, second).success
        started = _tick(defs, "landing_events_files", instance, None)
        assert started.run_requests == []
        assert set(json.loads(started.cursor)) == {first.isoformat(), second.isoformat()}
        # A day whose files changed after that run is requested; the other is not.
        _write(settings.landing / "events" / second.isoformat() / "b.csv")
        changed = _tick(defs, "landing_events_files", instance, None)
        assert list(_requests(changed)) == [second.isoformat()]
        assert _tick(defs, "landing_events_files", instance, started.cursor).run_requests == changed.run_requests
