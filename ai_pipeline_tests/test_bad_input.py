"""The bad-input corpus: every kind of bad input gets a quarantine row with its reason, or a reported issue.

Each case is a landing file with, per line, the decision expected for it. The whole corpus is one
partition day, read and validated as the pipeline does; conservation must hold for it.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from ai_pipeline.lib.ingest.contracts import Event
from ai_pipeline.lib.ingest.landing import read_landing_day
from ai_pipeline.lib.ingest.validation import validate

DAY = date(2024, 1, 5)
HEADER = b"event_id,user_id,event_type,event_time,amount,category,country\n"


def good(event_id: str, user: str = "u1") -> bytes:
    return f"{event_id},{user},purchase,2024-01-05T10:00:00Z,12.50,books,Germany\n".encode()


# file name -> (content, {line: None for valid, or the set of (field, rule) expected})
CORPUS: dict[str, tuple[bytes, dict[int, set[tuple[str, str]] | None]]] = {
    "01_malformed.csv": (
        HEADER + good("m1") + b"m2,u1,click,2024-01-05T10:00:00Z,1.0,books,Germany,EXTRA\n" + b"m3,u1\n",
        {2: None, 3: {("_record", "read_error")}, 4: {("_record", "read_error")}},
    ),
    "02_wrong_types.csv": (
        HEADER
        + b"t1,u1,click,2024-01-05T10:00:00Z,twelve,books,Germany\n"
        + b"t2,u1,Purchase,2024-01-05T10:00:00Z,1,books,Germany\n"
        + b"t3,u1,click,yesterday,1,books,Germany\n"
        + b"t4,u1,click,2024-02-30T10:00:00Z,1,books,Germany\n",
        {
            2: {("amount", "type")},
            3: {("event_type", "in_set")},
            4: {("event_time", "type")},
            5: {("event_time", "calendar")},
        },
    ),
    "03_nulls.csv": (
        HEADER + b"n1,,click,2024-01-05T10:00:00Z,,,\n" + b"n2,   ,click,2024-01-05T10:00:00Z,,,\n"
        b",u1,click,2024-01-05T10:00:00Z,,,\n",
        {2: {("user_id", "missing")}, 3: {("user_id", "pattern")}, 4: {("event_id", "missing")}},
    ),
    "04_timestamps.csv": (
        HEADER
        + b"d1,u1,click,2024-01-06T00:00:00Z,,,\n"
        + b"d2,u1,click,1900-01-01T00:00:00Z,,,\n"
        + b"d3,u1,click,2999-12-31T23:59:59Z,,,\n"
        + b"d4,u1,click,2024-01-05T23:30:00-02:00,,,\n"
        + b"d5,u1,click,2024-01-05T01:30:00+01:00,,,\n",
        {
            2: {("event_time", "partition")},
            3: {("event_time", "plausible")},
            4: {("event_time", "plausible")},
            5: {("event_time", "partition")},
            6: None,
        },
    ),
    "05_amounts.csv": (
        HEADER
        + b"a1,u1,purchase,2024-01-05T10:00:00Z,-5.00,,\n"
        + b"a2,u1,purchase,2024-01-05T10:00:00Z,NaN,,\n"
        + b"a3,u1,purchase,2024-01-05T10:00:00Z,inf,,\n"
        + b"a4,u1,purchase,2024-01-05T10:00:00Z,1e3,,\n"
        + b"a5,u1,purchase,2024-01-05T10:00:00Z,0,,\n",
        {2: {("amount", "ge")}, 3: {("amount", "type")}, 4: {("amount", "type")}, 5: {("amount", "type")}, 6: None},
    ),
    "06_strings.csv": (
        HEADER
        + b"s1,u1,click,2024-01-05T10:00:00Z,,"
        + b"x" * 200_000
        + b",\n"
        + b"s2,1'; DROP TABLE users; --,click,2024-01-05T10:00:00Z,,,\n"
        + b's3,u1,click,2024-01-05T10:00:00Z,,"books; DELETE FROM events",\n',
        {2: {("category", "max_length")}, 3: {("user_id", "pattern")}, 4: {("category", "pattern")}},
    ),
    "07_non_utf8.csv": (
        HEADER + b"b1,u1,click,2024-01-05T10:00:00Z,,caf\xe9,\n" + good("b2"),
        {2: {("_record", "read_error")}, 3: None},
    ),
    "08_bom_crlf.csv": (
        b"\xef\xbb\xbf"
        + HEADER.replace(b"\n", b"\r\n")
        + good("c1").replace(b"\n", b"\r\n")
        + good("c2").replace(b"\n", b"\r\n"),
        {2: None, 3: None},
    ),
    "09_duplicates.csv": (
        HEADER + good("dup1") + good("dup1") + b"dup1,u2,click,2024-01-05T11:00:00Z,,,\n" + good("m1"),
        {2: None, 3: {("event_id", "duplicate")}, 4: {("event_id", "duplicate")}, 5: {("event_id", "duplicate")}},
    ),
    "10_renamed_alias.csv": (
        b"event_id,userId,type,timestamp,amount,category,country\n" + good("r1"),
        {2: None},
    ),
    "11_unknown_rename.csv": (
        b"event_id,uid,event_type,event_time,amount,category,country\n" + good("x1"),
        {2: {("_record", "read_error")}},
    ),
    "12_missing_column.csv": (
        b"event_id,user_id,event_type,amount\n" + b"y1,u1,click,1\n",
        {2: {("_record", "read_error")}},
    ),
    "13_extra_columns.csv": (
        b"event_id,user_id,event_type,event_time,amount,category,country,session_id\n"
        + good("e1").replace(b"\n", b",s-1\n"),
        {2: None},
    ),
    "14_empty.csv": (b"", {}),
    "15_header_only.csv": (HEADER, {}),
    "16_mobile.jsonl": (
        b'{"event_id": "j1", "user_id": "u1", "event_type": "view", "event_time": "2024-01-05T10:00:00Z"}\n'
        b'{"event_id": "j2", "user_id": "u1", "event_type": "view", "event_time": "2024-01-05T10:00:00Z", '
        b'"amount": -1}\n'
        b'{"event_id": "j3", "user_id": "u1"\n'
        b"[1, 2, 3]\n"
        b'{"event_id": "dup1", "user_id": "u1", "event_type": "view", "event_time": "2024-01-05T10:00:00Z"}\n',
        {
            1: None,
            2: {("amount", "ge")},
            3: {("_record", "read_error")},
            4: {("_record", "read_error")},
            5: {("event_id", "duplicate")},
        },
    ),
}


@pytest.fixture(scope="module")
def corpus_result(tmp_path_factory):
    root = tmp_path_factory.mktemp("landing")
    folder = root / "events" / DAY.isoformat()
    folder.mkdir(parents=True)
    for name, (content, _) in CORPUS.items():
        (folder / name).write_bytes(content)
    (folder / "notes.txt").write_text("not data")
    outside = root.parent / "outside.csv"
    outside.write_bytes(HEADER + good("z1"))
    (folder / "17_link.csv").symlink_to(outside)
    read = read_landing_day(
        root, "events", DAY, Event, source="landing_events", ingested_at=datetime.now(UTC), settle_seconds=0
    )
    return read, validate(read.raw, Event, partition_day=DAY, unique_key="event_id")


def _decisions(result) -> dict[tuple[str, int], set[tuple[str, str]] | None]:
    decided: dict[tuple[str, int], set[tuple[str, str]] | None] = {}
    for row in result.valid.select("_source_uri", "_source_offset").iter_rows():
        decided[(Path(row[0]).name, row[1])] = None
    for uri, offset, reasons in result.quarantined.select("_source_uri", "_source_offset", "reasons").iter_rows():
        decided[(Path(uri).name, offset)] = {(r["field"], r["rule"]) for r in reasons}
    return decided


def test_every_line_gets_its_expected_decision(corpus_result):
    _, result = corpus_result
    decided = _decisions(result)
    expected = {(name, line): want for name, (_, lines) in CORPUS.items() for line, want in lines.items()}
    assert decided == expected


def test_conservation_and_counts(corpus_result):
    read, result = corpus_result
    rows_in = sum(len(lines) for _, lines in CORPUS.values())
    assert read.raw.height == rows_in
    assert result.valid.height + result.quarantined.height == rows_in
    assert result.duplicates == 4
    assert result.valid["event_id"].is_unique().all()


def test_input_level_issues_are_reported(corpus_result):
    read, _ = corpus_result
    notes = "\n".join(read.notes)
    assert "14_empty.csv: empty file" in notes
    assert "15_header_only.csv: header only, no rows" in notes
    refused = {Path(f.uri).name: f.reason for f in read.refused}
    assert refused.keys() == {"notes.txt", "17_link.csv"}
    assert refused["notes.txt"].startswith("unsupported file type")
    assert refused["17_link.csv"] == "a link that leads outside the landing root"


def test_schema_errors_name_expected_and_found_columns(corpus_result):
    read, result = corpus_result
    errors = {Path(r.uri).name: r.error for r in read.reports if r.error}
    assert set(errors) == {"11_unknown_rename.csv", "12_missing_column.csv"}
    assert "missing required column(s) ['user_id']" in errors["11_unknown_rename.csv"]
    assert "'uid'" in errors["11_unknown_rename.csv"]
    assert "missing required column(s) ['event_time']" in errors["12_missing_column.csv"]
    aliased = {Path(r.uri).name: r.aliased for r in read.reports if r.aliased}
    assert aliased == {"10_renamed_alias.csv": {"userId": "user_id", "type": "event_type", "timestamp": "event_time"}}
    unknown = {Path(r.uri).name: r.unknown for r in read.reports if r.unknown}
    assert unknown == {"11_unknown_rename.csv": ["uid"], "13_extra_columns.csv": ["session_id"]}


def test_quarantine_keeps_raw_record_lineage_and_readable_reasons(corpus_result):
    _, result = corpus_result
    rows = {Path(r["_source_uri"]).name + f":{r['_source_offset']}": r for r in result.quarantined.to_dicts()}
    non_utf8 = rows["07_non_utf8.csv:2"]
    assert json.loads(non_utf8["_raw"])["category"] == "caf\\xe9"
    assert "07_non_utf8.csv line 2: bytes that are not UTF-8 in ['category']" in non_utf8["reasons"][0]["message"]
    malformed = rows["01_malformed.csv:3"]
    assert "expected 7 fields, found 8" in malformed["reasons"][0]["message"]
    assert json.loads(malformed["_raw"])[-1] == "EXTRA"
    duplicate = rows["09_duplicates.csv:4"]["reasons"][0]
    assert duplicate["message"] == "conflicting duplicate of landing_events:events/2024-01-05/09_duplicates.csv:2"
    sql = rows["06_strings.csv:3"]
    assert sql["user_id"] == "1'; DROP TABLE users; --"
    assert sql["_source"] == "landing_events" and sql["partition_date"] == DAY


def test_valid_rows_are_typed(corpus_result):
    _, result = corpus_result
    row = result.valid.filter(pl.col("event_id") == "d5").row(0, named=True)
    assert row["event_time"] == datetime(2024, 1, 5, 0, 30, tzinfo=UTC)
    assert result.valid.schema["amount"] == pl.Float64
