"""The online store, both backends: SQLite in a temp dir and a real PostgreSQL (its own schema per test)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from ai_pipeline.lib.feature_store import features
from ai_pipeline.lib.feature_store.online_store import PostgresOnlineStore, SqliteOnlineStore
from ai_pipeline.lib.ingest.sample import clean_events

DAY = date(2024, 3, 10)
ODD_USER = "o'brien\"; drop table x; --"


@pytest.fixture(scope="module")
def days() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Features of DAY and of the next day, with a user of the first day missing from the second and a user
    (with an id that looks like SQL) only in the second."""
    events = clean_events(date(2024, 2, 1), DAY + timedelta(days=1), events_per_day=40, users=12, seed=5)
    daily = features.daily_aggregates(events)
    first, second = features.run(daily, date(2024, 2, 1), [DAY, DAY + timedelta(days=1)])
    gone = first["user_id"][2]
    odd = second.filter(pl.col("user_id") == second["user_id"][0]).with_columns(pl.lit(ODD_USER).alias("user_id"))
    second = pl.concat([second.filter(pl.col("user_id") != gone), odd]).sort("user_id")
    assert first["amount_mean_7d"].null_count() > 0  # null means travel too
    assert not first.select(pl.exclude("feature_date", "user_id")).equals(
        second.filter(pl.col("user_id").is_in(first["user_id"].implode())).select(pl.exclude("feature_date", "user_id"))
    )
    return first, second


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path: Path) -> Iterator:
    if request.param == "sqlite":
        yield SqliteOnlineStore(tmp_path / "online" / "features.sqlite")
        return
    pg_dsn = request.getfixturevalue("pg_dsn")
    pg_schema = request.getfixturevalue("pg_schema")  # dropped (with the table) after the test
    client = PostgresOnlineStore(pg_dsn, f"{pg_schema}.online_user_features")
    try:
        yield client
    finally:
        client.close()


def test_publish_then_snapshot_is_the_frame_exactly(store, days) -> None:
    first, _ = days
    assert store.publish(first) == first.height
    snapshot = store.snapshot()
    assert snapshot.schema == first.schema
    assert snapshot.schema["first_event_at"] == pl.Datetime("us", "UTC")
    assert snapshot.equals(first)
    assert store.feature_date() == DAY


def test_lookup_keeps_order_and_duplicates_and_nulls_unknown_users(store, days) -> None:
    first, _ = days
    store.publish(first)
    a, b = first["user_id"][3], first["user_id"][0]
    ids = [a, "unknown", b, a, ODD_USER]
    found = store.lookup(ids)
    assert found.schema == first.schema
    assert found["user_id"].to_list() == ids
    by_user = {row["user_id"]: row for row in first.iter_rows(named=True)}
    assert found.row(0, named=True) == by_user[a] == found.row(3, named=True)
    assert found.row(2, named=True) == by_user[b]
    for i in (1, 4):  # not in the store: everything but the id is null
        row = found.row(i, named=True)
        assert row["user_id"] == ids[i] and all(v is None for k, v in row.items() if k != "user_id")
    assert store.lookup([]).height == 0
    assert store.lookup([b]).equals(first.filter(pl.col("user_id") == b))


def test_republishing_replaces_the_whole_store(store, days) -> None:
    first, second = days
    store.publish(first)
    assert store.publish(second) == second.height
    assert store.feature_date() == DAY + timedelta(days=1)
    assert store.snapshot().equals(second)
    gone = sorted(set(first["user_id"]) - set(second["user_id"]))
    assert len(gone) == 1
    lookup = store.lookup([*gone, ODD_USER])
    assert lookup["feature_date"].to_list() == [None, DAY + timedelta(days=1)]
    assert lookup.row(1, named=True) == second.filter(pl.col("user_id") == ODD_USER).row(0, named=True)
    # and back to the older day: the store holds what was published last, nothing else
    store.publish(first)
    assert store.snapshot().equals(first)


def test_a_frame_with_two_dates_is_refused_and_changes_nothing(store, days) -> None:
    first, second = days
    store.publish(first)
    with pytest.raises(ValueError, match="one feature date; got 2"):
        store.publish(pl.concat([first, second]))
    assert store.snapshot().equals(first)
    assert store.feature_date() == DAY


def test_an_empty_store(store) -> None:
    assert store.feature_date() is None
    assert store.snapshot().height == 0
    found = store.lookup(["a", "b", "a"])
    assert found["user_id"].to_list() == ["a", "b", "a"]
    assert found["feature_date"].to_list() == [None, None, None]
