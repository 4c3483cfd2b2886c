"""The lake (Delta Lake through delta-rs) on real tables in tmp_path: a write replaces exactly its slice, writers of
different days commit at once from separate processes, writers of the same day race and the loser retries (one
copy, never two), and DuckDB reads committed snapshots."""

from __future__ import annotations

import multiprocessing
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest

from ai_pipeline.lib import lakehouse
from ai_pipeline.lib.lakehouse import Slice, SliceError

DAY = date(2024, 3, 1)


def _day(day: date, rows: int, tag: str = "a") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "partition_date": [day] * rows,
            "event_id": [f"{tag}-{day}-{i}" for i in range(rows)],
            "amount": pl.Series([Decimal(i) / 100 for i in range(rows)], dtype=pl.Decimal(38, 9)),
            "tags": [["x", tag]] * rows,
        }
    )


def _days(start: date, end: date) -> Slice:
    return Slice("partition_date", start=start, end=end)


def _counts(root: Path, name: str) -> dict[date, int]:
    frame = lakehouse.read(root, name).group_by("partition_date").len()
    return dict(frame.sort("partition_date").iter_rows())


def test_a_write_replaces_exactly_its_slice(tmp_path):
    three = pl.concat([_day(DAY + timedelta(days=i), 10 + i) for i in range(3)])
    first = lakehouse.write(tmp_path, "events", three, _days(DAY, DAY + timedelta(days=3)))
    assert (first.rows, first.attempts) == (33, 1)

    second = DAY + timedelta(days=1)
    again = _day(second, 4, tag="b")
    for _ in range(2):  # the same write twice: the same table
        lakehouse.write(tmp_path, "events", again, _days(second, second + timedelta(days=1)))
        assert _counts(tmp_path, "events") == {DAY: 10, second: 4, DAY + timedelta(days=2): 12}
    day_two = lakehouse.read(tmp_path, "events", _days(second, second + timedelta(days=1)))
    assert sorted(day_two["event_id"]) == sorted(again["event_id"])
    assert day_two.schema == again.schema

    # A day with nothing today: its rows go, the table stays.
    lakehouse.write(tmp_path, "events", again.head(0), _days(second, second + timedelta(days=1)))
    assert _counts(tmp_path, "events") == {DAY: 10, DAY + timedelta(days=2): 12}


def test_rows_outside_a_writes_slice_are_refused(tmp_path):
    with pytest.raises(SliceError, match="2 of 2 rows of events lie outside"):
        lakehouse.write(tmp_path, "events", _day(DAY, 2), _days(DAY + timedelta(days=1), DAY + timedelta(days=2)))
    assert lakehouse.tables(tmp_path) == []


def test_named_partitions_are_slices_too(tmp_path):
    name = "o'brien docs"  # a quote in a value stays a value
    frame = pl.DataFrame({"collection": [name, name, "other"], "chunk": ["a", "b", "c"]})
    lakehouse.write(tmp_path, "chunks", frame, Slice("collection", values=(name, "other")))
    lakehouse.write(tmp_path, "chunks", frame.head(1), Slice("collection", values=(name,)))
    assert sorted(lakehouse.read(tmp_path, "chunks").rows()) == [(name, "a"), ("other", "c")]


def test_a_whole_table_write_replaces_the_table(tmp_path):
    lakehouse.write(tmp_path, "users", pl.DataFrame({"user_id": ["u1", "u2"]}), Slice())
    lakehouse.write(tmp_path, "users", pl.DataFrame({"user_id": ["u3"]}), Slice())
    assert lakehouse.read(tmp_path, "users")["user_id"].to_list() == ["u3"]


def test_duckdb_reads_committed_snapshots(tmp_path):
    lakehouse.write(tmp_path, "events", _day(DAY, 5), _days(DAY, DAY + timedelta(days=1)))
    with duckdb.connect() as before:
        assert lakehouse.attach(before, tmp_path) == ["events"]
        nxt = DAY + timedelta(days=1)
        lakehouse.write(tmp_path, "events", _day(nxt, 7), _days(nxt, nxt + timedelta(days=1)))
        # A reader keeps the snapshot it opened; a new one sees the new commit.
        assert before.execute("select count(*) from main.events").fetchone() == (5,)
        with duckdb.connect() as after:
            lakehouse.attach(after, tmp_path)
            assert after.execute("select count(*) from main.events").fetchone() == (12,)
            tables = after.execute(
                "select table_name from information_schema.tables where table_schema = 'main'"
            ).fetchall()
            assert tables == [("events",)]
            amount = after.execute("select sum(amount) from main.events where partition_date = ?", [nxt]).fetchone()
            assert amount == (Decimal("0.21"),)


def test_copies_for_dbt_and_publishing_back(tmp_path):
    lake, database = tmp_path / "lake", tmp_path / "dbt.duckdb"
    lakehouse.write(lake, "events", _day(DAY, 3), _days(DAY, DAY + timedelta(days=1)))
    assert lakehouse.copy_into(database, lake, ["events", "missing"]) == ["events"]
    with duckdb.connect(str(database)) as conn:
        conn.execute("create table main.daily as select partition_date, count(*) as n from main.events group by 1")
    published = lakehouse.publish(database, lake, "daily", _days(DAY, DAY + timedelta(days=1)))
    assert published.rows == 1
    assert lakehouse.read(lake, "daily").rows() == [(DAY, 3)]


def _write_day(root: str, day: date, rows: int, tag: str, barrier) -> int:
    barrier.wait(timeout=60)
    return lakehouse.write(Path(root), "events", _day(day, rows, tag), _days(day, day + timedelta(days=1))).attempts


def test_writers_of_different_days_commit_side_by_side_and_same_day_races_are_retried(tmp_path):
    lakehouse.write(tmp_path, "events", _day(DAY, 1), _days(DAY, DAY + timedelta(days=1)))
    days = [DAY + timedelta(days=i) for i in range(1, 5)]
    contested = DAY + timedelta(days=9)
    writers = [(d, 20 + i, "own") for i, d in enumerate(days)] + [(contested, 5 + i, f"w{i}") for i in range(4)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(len(writers))
    with context.Pool(len(writers)) as pool:
        attempts = pool.starmap(_write_day, [(str(tmp_path), d, n, tag, barrier) for d, n, tag in writers])

    counts = _counts(tmp_path, "events")
    assert {d: counts[d] for d in days} == {d: 20 + i for i, d in enumerate(days)}
    # The contested day holds one writer's rows, whole: never two copies, never a mix.
    rows = lakehouse.read(tmp_path, "events", _days(contested, contested + timedelta(days=1)))
    assert rows["event_id"].str.split("-").list.first().n_unique() == 1
    winner = int(rows["event_id"][0].split("-")[0][1:])
    assert rows.height == 5 + winner
    # Eight commits on one table at once: the same-day writers cannot all have committed on their first snapshot.
    assert sum(attempts[len(days) :]) > 4, attempts
