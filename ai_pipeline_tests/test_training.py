"""Point-in-time training sets from a real offline store (a DuckDB file), against a naive reference, and the
entity files they start from."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from ai_pipeline.lib.feature_store import features
from ai_pipeline.lib.feature_store.training import EntityError, read_entities, training_set
from ai_pipeline.lib.ingest.sample import clean_events

FEATURE_DAYS = [date(2024, 1, d) for d in (5, 6, 7, 8, 9, 10, 11, 12, 15)]  # 13 and 14 were never computed
U1, U2, U3 = "u000001", "u000002", "u000003"
GAP = (U2, [date(2024, 1, 8), date(2024, 1, 9)])  # U2 has no rows on these days


def utc(day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(2024, 1, day, hour, minute, second, micro, tzinfo=UTC)


# (user, timestamp, feature date with ttl = 1 day, with ttl = 3 days); None: no features
CASES = [
    (U1, utc(5, 12), None, None),  # no feature date before the timestamp's day
    (U1, utc(6), date(2024, 1, 5), date(2024, 1, 5)),  # midnight: the previous day's features, fresh
    (U1, utc(6, 23, 59, 59, 999_999), date(2024, 1, 5), date(2024, 1, 5)),
    (U1, utc(7), date(2024, 1, 6), date(2024, 1, 6)),  # never the features of the timestamp's own day
    (U1, utc(7), date(2024, 1, 6), date(2024, 1, 6)),  # a duplicate row
    (U1, utc(7, 9, 30), date(2024, 1, 6), date(2024, 1, 6)),
    (U2, utc(9, 10), None, date(2024, 1, 7)),  # latest is the 7th: 1 day 10 h old
    (U2, utc(10), None, date(2024, 1, 7)),  # exactly 2 days old
    (U2, utc(11), date(2024, 1, 10), date(2024, 1, 10)),
    (U1, utc(14, 8), None, date(2024, 1, 12)),  # the 13th was never computed: 1 day 8 h old
    (U1, utc(16), date(2024, 1, 15), date(2024, 1, 15)),
    (U1, utc(19), None, None),  # exactly 3 days old: stale at ttl = 3 days
    (U3, utc(1), None, None),  # before the store begins
    (U3, utc(12, 23, 0), date(2024, 1, 11), date(2024, 1, 11)),
    ("nobody", utc(10, 12), None, None),
    ("u000004", utc(15, 0, 0, 0, 1), None, date(2024, 1, 12)),  # the 12th, 2 days and 1 µs old
]


@pytest.fixture(scope="module")
def offline() -> pl.DataFrame:
    events = clean_events(date(2023, 12, 20), date(2024, 1, 15), events_per_day=40, users=5, seed=3)
    daily = features.daily_aggregates(events)
    frame = pl.concat(features.run(daily, date(2023, 12, 20), FEATURE_DAYS))
    user, gap = GAP
    frame = frame.filter(~((pl.col("user_id") == user) & pl.col("feature_date").is_in(gap)))
    # every user has features on every computed day but the gap (the test relies on it)
    assert frame.group_by("user_id").len().sort("user_id")["len"].to_list() == [9, 7, 9, 9, 9]
    assert frame["amount_mean_7d"].null_count() > 0
    return frame


@pytest.fixture
def connection(tmp_path: Path, offline: pl.DataFrame):
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.execute("set TimeZone = 'America/Los_Angeles'")  # the session's zone must not matter
    con.register("offline_frame", offline.to_arrow())
    con.execute("create table main.user_window_features as select * from offline_frame")
    con.unregister("offline_frame")
    yield con
    con.close()


def reference(offline: pl.DataFrame, entities: pl.DataFrame, ttl: timedelta) -> list[dict | None]:
    """The features row each entity row should get (None: nulls), found by looping over the offline rows."""
    rows = {(r["user_id"], r["feature_date"]): r for r in offline.iter_rows(named=True)}
    result = []
    for user, stamp in entities.select("user_id", "event_timestamp").iter_rows():
        stamp = (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).astimezone(UTC)
        earlier = [d for (u, d) in rows if u == user and d < stamp.date()]
        if not earlier:
            result.append(None)
            continue
        latest = max(earlier)
        age = stamp - datetime.combine(latest + timedelta(days=1), time(), UTC)
        result.append(rows[(user, latest)] if age < ttl else None)
    return result


def _entities(order: list[int]) -> pl.DataFrame:
    cases = [CASES[i] for i in order]
    return pl.DataFrame(
        {
            "user_id": [c[0] for c in cases],
            "event_timestamp": [c[1] for c in cases],
            "label": [i % 2 for i in order],
            "note": [f"case {i}" for i in order],
        },
        schema={
            "user_id": pl.String,
            "event_timestamp": pl.Datetime("us", "UTC"),
            "label": pl.Int64,
            "note": pl.String,
        },
    )


ORDER = [9, 3, 14, 0, 12, 7, 1, 15, 5, 10, 2, 13, 4, 8, 11, 6]  # every case, shuffled


def _check(result: pl.DataFrame, entities: pl.DataFrame, offline: pl.DataFrame, ttl: timedelta) -> None:
    feature_columns = [c for c in offline.columns if c != "user_id"]
    assert result.columns == [*entities.columns, *feature_columns]
    assert result.height == entities.height
    expected = reference(offline, entities, ttl)
    for i, (row, want) in enumerate(zip(result.iter_rows(named=True), expected, strict=True)):
        for column in feature_columns:
            value = None if want is None else want[column]
            assert row[column] == value, (i, row["note"], column)
    for column in offline.columns:
        if column != "user_id":
            assert result.schema[column] == offline.schema[column], column


@pytest.mark.parametrize("zone", [None, "UTC", "Asia/Tokyo", "America/New_York"])
def test_training_set_equals_the_naive_reference(connection, offline, zone) -> None:
    entities = _entities(ORDER)
    if zone is None:
        entities = entities.with_columns(pl.col("event_timestamp").dt.replace_time_zone(None))
    else:
        entities = entities.with_columns(pl.col("event_timestamp").dt.convert_time_zone(zone))
    result = training_set(connection, entities)
    _check(result, entities, offline, timedelta(days=1))
    # the input's rows, order and extra columns are kept
    kept = result.select(entities.columns)
    if zone is None:  # naive means UTC, and the result says so
        assert kept["event_timestamp"].dtype == pl.Datetime("us", "UTC")
        kept = kept.with_columns(pl.col("event_timestamp").dt.replace_time_zone(None))
    assert kept.equals(entities)
    # and the hand-written answers agree with the reference
    dates = dict(zip(result["note"], result["feature_date"], strict=True))
    assert dates == {f"case {i}": CASES[i][2] for i in ORDER}
    assert result["feature_date"].null_count() == 8  # the test covers both outcomes


def _asof_threshold(connection: duckdb.DuckDBPyConnection) -> int:
    return int(connection.execute("select current_setting('asof_loop_join_threshold')").fetchone()[0])


@pytest.mark.parametrize("days", [0, 0.5, 1, 3, 4, 30])  # up to 1 day: the equi-join on day - 1; beyond: ASOF
def test_ttl(connection, offline, days) -> None:
    entities = _entities(ORDER)
    threshold = _asof_threshold(connection)
    result = training_set(connection, entities, ttl=timedelta(days=days))
    _check(result, entities, offline, timedelta(days=days))
    if days == 3:
        assert result["feature_date"].to_list() == [CASES[i][3] for i in ORDER]
    if days == 0:
        assert result["feature_date"].null_count() == entities.height
    stale_at_3 = result.filter(pl.col("note") == "case 11")["feature_date"].to_list()
    assert stale_at_3 == [None if days <= 3 else date(2024, 1, 15)]
    assert _asof_threshold(connection) == threshold  # the forced ASOF plan does not outlive the call


@pytest.mark.parametrize(
    ("ttl", "reach"),  # reach: the most days between a timestamp's day and the feature date it may get
    [
        (timedelta(hours=6), 1),
        (timedelta(days=1), 1),
        (timedelta(days=1, microseconds=1), 2),  # the smallest TTL past the equi-join: day - 2 at exactly midnight
        (timedelta(days=2, hours=12), 3),  # the 13th and 14th were never computed: the 15th reaches the 12th
        (timedelta(days=6), 3),
    ],
)
def test_random_entities_equal_the_naive_reference(connection, offline, ttl, reach) -> None:
    rng = random.Random(11)
    users = [U1, U2, U3, "u000004", "u000005", "nobody", None]
    start = datetime(2024, 1, 3, tzinfo=UTC)
    stamps = []
    for _ in range(1500):
        stamp = start + timedelta(microseconds=rng.randrange(16 * 86_400_000_000))
        edge = rng.random()
        if edge < 0.1:  # exactly midnight, and the last microsecond before it
            stamp = stamp.replace(hour=0, minute=0, second=0, microsecond=0)
        elif edge < 0.15:
            stamp = stamp.replace(hour=23, minute=59, second=59, microsecond=999_999)
        stamps.append(stamp)
    entities = pl.DataFrame(
        {
            "user_id": [rng.choice(users) for _ in stamps],
            "event_timestamp": stamps,
            "note": [f"row {i}" for i in range(len(stamps))],
        },
        schema={"user_id": pl.String, "event_timestamp": pl.Datetime("us", "UTC"), "note": pl.String},
    ).with_columns(pl.col("event_timestamp").dt.convert_time_zone("Asia/Kolkata"))
    result = training_set(connection, entities, ttl=ttl)
    _check(result, entities, offline, ttl)
    assert result.select(entities.columns).equals(entities)
    matched = result.filter(pl.col("feature_date").is_not_null())
    assert 0 < matched.height < entities.height
    age = (matched["event_timestamp"].dt.convert_time_zone("UTC").dt.date() - matched["feature_date"]).dt.total_days()
    assert age.min() == 1
    assert age.max() == reach


def test_another_table_and_stale_rows_are_all_null(tmp_path, offline) -> None:
    con = duckdb.connect(str(tmp_path / "other.duckdb"))
    try:
        con.register("offline_frame", offline.to_arrow())
        con.execute("create schema features")
        con.execute("create table features.by_day as select * from offline_frame")
        entities = _entities(ORDER)
        result = training_set(con, entities, table="features.by_day")
        _check(result, entities, offline, timedelta(days=1))
        nulls = result.filter(pl.col("feature_date").is_null()).select(pl.exclude(entities.columns))
        assert nulls.height == 8
        assert all(nulls[c].null_count() == nulls.height for c in nulls.columns)
    finally:
        con.close()


def test_entity_frame_errors(connection) -> None:
    entities = _entities(ORDER)
    with pytest.raises(EntityError, match="event_timestamp"):
        training_set(connection, entities.drop("event_timestamp"))
    with pytest.raises(EntityError, match="user_id"):
        training_set(connection, entities.drop("user_id"))
    as_text = entities.with_columns(pl.col("event_timestamp").dt.to_string())
    with pytest.raises(EntityError, match="must be a datetime column"):
        training_set(connection, as_text)
    with pytest.raises(EntityError, match="must be a datetime column"):
        training_set(connection, entities.with_columns(pl.col("event_timestamp").dt.date()))
    with pytest.raises(EntityError, match="active_days"):
        training_set(connection, entities.with_columns(pl.lit(1).alias("active_days")))


def test_an_empty_entity_frame_gives_an_empty_training_set(connection, offline) -> None:
    for ttl in (timedelta(days=1), timedelta(days=3)):
        result = training_set(connection, _entities([]), ttl=ttl)
        assert result.height == 0
        assert result.columns == [*_entities([]).columns, *[c for c in offline.columns if c != "user_id"]]


def test_a_store_key_held_twice_is_an_error(tmp_path, offline) -> None:
    con = duckdb.connect(str(tmp_path / "twice.duckdb"))
    try:
        con.register("offline_frame", pl.concat([offline, offline.head(1)]).to_arrow())
        con.execute("create table main.user_window_features as select * from offline_frame")
        user, day = offline.row(0)[:2]
        entities = pl.DataFrame(
            {"user_id": [user], "event_timestamp": [datetime.combine(day + timedelta(days=1), time(9), UTC)]}
        )
        for ttl in (timedelta(days=1), timedelta(days=3)):
            with pytest.raises(ValueError, match=r"main\.user_window_features has more than one row"):
                training_set(con, entities, ttl=ttl)
    finally:
        con.close()


# --- entity files ---------------------------------------------------------------------------------------------


def test_read_entities_from_csv(tmp_path: Path, connection, offline) -> None:
    path = tmp_path / "entities.csv"
    path.write_text(
        "user_id,event_timestamp,label\n"
        "007,2024-01-07T00:00:00Z,1\n"
        f"{U1},2024-01-06 23:59:59.999999,0\n"
        f"{U2},2024-01-11T01:00:00+01:00,1\n"
        f"{U1},2024-01-16T08:30:00.5,0\n"
    )
    frame = read_entities(path)
    assert frame.schema == pl.Schema(
        {"user_id": pl.String, "event_timestamp": pl.Datetime("us", "UTC"), "label": pl.Int64}
    )
    assert frame["user_id"].to_list() == ["007", U1, U2, U1]
    assert frame["event_timestamp"].to_list() == [
        utc(7),
        utc(6, 23, 59, 59, 999_999),
        utc(11),
        utc(16, 8, 30, 0, 500_000),
    ]
    result = training_set(connection, frame)
    assert result["feature_date"].to_list() == [None, date(2024, 1, 5), date(2024, 1, 10), date(2024, 1, 15)]
    _check(result, frame, offline, timedelta(days=1))


@pytest.mark.parametrize(
    "bad",
    ["yesterday", "2024-02-30T00:00:00Z", "2024-01-07T25:00:00", "2024-01-07T10:00:00+2"],
)
def test_a_bad_timestamp_names_file_row_and_field(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        f"user_id,event_timestamp\n{U1},2024-01-07T00:00:00Z\n{U2},2024-01-07T01:00:00Z\n{U3},{bad}\n{U1},also bad\n"
    )
    with pytest.raises(EntityError) as error:
        read_entities(path)
    message = str(error.value)
    assert str(path) in message and "row 3" in message and "event_timestamp" in message and repr(bad) in message


def test_read_entities_from_parquet(tmp_path: Path, connection, offline) -> None:
    entities = _entities(ORDER)
    typed = tmp_path / "typed.parquet"
    entities.write_parquet(typed)
    assert read_entities(typed).equals(entities)
    naive = tmp_path / "naive.parquet"
    entities.with_columns(pl.col("event_timestamp").dt.replace_time_zone(None)).write_parquet(naive)
    result = training_set(connection, read_entities(naive))
    _check(result, read_entities(naive), offline, timedelta(days=1))
    as_text = tmp_path / "text.parquet"
    entities.with_columns(pl.col("event_timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f%:z")).write_parquet(as_text)
    assert read_entities(as_text).equals(entities)


def test_unreadable_entity_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"
    missing.write_text("user,event_timestamp\nu1,2024-01-01T00:00:00Z\n")
    with pytest.raises(EntityError, match=r"missing\.csv: missing column\(s\) \['user_id'\]"):
        read_entities(missing)
    other = tmp_path / "entities.json"
    other.write_text("[]")
    with pytest.raises(EntityError, match="unsupported entity file"):
        read_entities(other)
