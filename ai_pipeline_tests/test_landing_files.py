"""Damaged and unusual landing files through Dagster: every record of every file is counted independently of the
reader, and ends up published, quarantined with its reason, or in a file refused by a failing check.

The corpus is one day folder of files the project's generator never writes: a quote that never closes, compressed
files under a `.csv` name, upper-case suffixes, UTF-16/32 with and without a byte-order mark, a Spark directory of
part files, a duplicated column, archives, links, temporary and binary files, files over the size limit, and
legitimate multi-line fields. The test counts each file's records its own way (from the bytes it wrote).
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import os
import zipfile
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
import zstandard

from ai_pipeline.defs import build_defs
from ai_pipeline.defs.keys import DAILY_JOB, FILES_CHECK
from ai_pipeline.settings import Settings
from ai_pipeline_tests.conftest import landing_zone

DAY, FRESH_DAY = date(2024, 1, 5), date(2024, 1, 6)
HEADER = "event_id,user_id,event_type,event_time,amount,category,country\n"
LIMIT = 200_000  # bytes per file, decompressed


def good(event_id: str) -> str:
    return f"{event_id},u1,purchase,2024-01-05T10:00:00Z,12.50,books,Germany\n"


def rows(prefix: str, n: int) -> str:
    return "".join(good(f"{prefix}{i}") for i in range(n))


SWALLOW = HEADER + good("s0") + 's1,u1,click,"2024-01-05T10:00:00Z,1,books,Germany\n' + rows("s-after-", 800)
MULTILINE = (
    "event_id,user_id,event_type,event_time,amount,note\n"
    'm1,u1,click,2024-01-05T10:00:00Z,1,"gift wrap\nleave at the door"\n'
    "m2,u1,click,2024-01-05T11:00:00Z,2,plain\n"
)
PARQUET = io.BytesIO()
pl.DataFrame({"event_id": ["pq1", "pq2"], "user_id": ["u1", "u2"], "event_type": ["view", "view"]}).with_columns(
    pl.lit("2024-01-05T09:00:00Z").alias("event_time")
).write_parquet(PARQUET)
ZIP = io.BytesIO()
with zipfile.ZipFile(ZIP, "w") as archive:
    archive.writestr("inner.csv", HEADER + rows("z", 3))

# name -> (bytes, records the file holds (None: refused), rows published, rows quarantined)
FILES: dict[str, tuple[bytes, int | None, int, int]] = {
    "swallow.csv": (SWALLOW.encode(), 802, 801, 1),
    "gzip_named.csv": (gzip.compress((HEADER + rows("g", 3)).encode()), 3, 3, 0),
    "zstd_named.csv": (zstandard.ZstdCompressor().compress((HEADER + rows("zs", 3)).encode()), 3, 3, 0),
    "bzip2_upper.CSV": (bz2.compress((HEADER + rows("bz", 3)).encode()), 3, 3, 0),
    "export.csv.gz": (gzip.compress((HEADER + rows("gz", 2)).encode()), 2, 2, 0),
    "mobile.JSONL": (
        b'{"event_id": "j1", "user_id": "u1", "event_type": "view", "event_time": "2024-01-05T10:00:00Z"}\n',
        1,
        1,
        0,
    ),
    "utf16_bom.csv": ((HEADER + rows("w", 3)).encode("utf-16"), 3, 3, 0),
    "utf32_bom.csv": ((HEADER + rows("w32-", 2)).encode("utf-32"), 2, 2, 0),
    "spark.csv/part-00000.csv": ((HEADER + rows("p0-", 2)).encode(), 2, 2, 0),
    "spark.csv/part-00001": ((HEADER + rows("p1-", 3)).encode(), 3, 3, 0),
    "spark.csv/_SUCCESS": (b"", 0, 0, 0),
    "spark.csv/.part-00000.csv.crc": (b"crc", 0, 0, 0),
    "duplicated_column.csv": (
        ("event_id,user_id,event_type,event_time,user_id\n" + "d1,u1,view,2024-01-05T10:00:00Z,u2\n").encode(),
        1,
        0,
        1,
    ),
    "multiline.csv": (MULTILINE.encode(), 2, 2, 0),
    "cr_only.csv": ((HEADER + rows("cr", 2)).replace("\n", "\r").encode(), 2, 2, 0),
    "array.json": (
        json.dumps(
            [
                {"event_id": "a1", "user_id": "u1", "event_type": "view", "event_time": "2024-01-05T10:00:00Z"},
                {"event_id": "a2", "user_id": "u1", "event_type": "view", "event_time": "2024-01-05T11:00:00Z"},
            ]
        ).encode(),
        2,
        2,
        0,
    ),
    "parquet_named.csv": (PARQUET.getvalue(), 2, 2, 0),
    "utf16_no_bom.csv": ((HEADER + rows("n", 2)).encode("utf-16-le"), None, 0, 0),
    "archive.csv": (ZIP.getvalue(), None, 0, 0),
    "notes.txt": (b"not data", None, 0, 0),
    "upload.csv.tmp": ((HEADER + rows("t", 2)).encode(), None, 0, 0),
    "binary.csv": (bytes(range(256)) * 4, None, 0, 0),
    "too_big.csv": ((HEADER + rows("big", 4000)).encode(), None, 0, 0),
    "bomb.csv": (gzip.compress((HEADER + rows("bomb", 4000)).encode()), None, 0, 0),
}
REFUSED = {
    "utf16_no_bom.csv": "binary content (NUL bytes) and no byte-order mark",
    "archive.csv": "a zip archive, not a data file",
    "notes.txt": "unsupported file type",
    "upload.csv.tmp": "a temporary file",
    "binary.csv": "binary content (NUL bytes)",
    "too_big.csv": f"size over the limit of {LIMIT:,} bytes",
    "bomb.csv": f"decompressed size over the limit of {LIMIT:,} bytes",
    "outside_link.csv": "a link that leads outside the landing root",
    "dangling_link.csv": "a link that leads nowhere",
}


def _independent_count(name: str, data: bytes) -> int:
    """Records as the test counts them: non-blank lines after the header, of the decompressed, decoded text."""
    if name.endswith("part-00001") or name.endswith(".csv") or name.endswith((".CSV", ".gz")):
        if data.startswith(b"PAR1"):
            return pl.read_parquet(io.BytesIO(data)).height
        for opener in (gzip.decompress, bz2.decompress, zstandard.ZstdDecompressor().decompressobj().decompress):
            try:
                data = opener(data)
                break
            except Exception:
                continue
        for bom, encoding in ((b"\xff\xfe\x00\x00", "utf-32"), (b"\xff\xfe", "utf-16")):
            if data.startswith(bom):
                data = data.decode(encoding).encode()
        lines = [line for line in data.replace(b"\r", b"\n").split(b"\n") if line.strip()]
        return len(lines) - 1 - (1 if name == "multiline.csv" else 0)  # its one record spans two lines
    if name.endswith(".json"):
        return len(json.loads(data))
    return len([line for line in data.splitlines() if line.strip()])


@pytest.fixture(scope="module")
def landed(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=home, start_date=DAY)
    folder = settings.landing / "events" / DAY.isoformat()
    for name, (data, *_) in FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / "_SUCCESS").write_bytes(b"")  # the writer closed the day: no file waits to settle
    outside = home / "outside.csv"
    outside.write_text(HEADER + rows("o", 2))
    (folder / "outside_link.csv").symlink_to(outside)
    (folder / "dangling_link.csv").symlink_to(settings.landing / "gone.csv")
    # The next day's file was written a moment ago and its folder has no completion marker.
    fresh = settings.landing / "events" / FRESH_DAY.isoformat() / "still_writing.csv"
    fresh.parent.mkdir(parents=True)
    fresh.write_text(HEADER + rows("f", 2).replace("2024-01-05", "2024-01-06"))
    # A dataset directory its writer closed with its own marker is complete, however fresh.
    done = fresh.parent / "done.csv"
    done.mkdir()
    (done / "part-00000.csv").write_text(HEADER + rows("d", 3).replace("2024-01-05", "2024-01-06"))
    (done / "_SUCCESS").write_text("")

    job = build_defs(settings, landing_zone(settings, settle_s=3600, max_file_bytes=LIMIT)).resolve_job_def(DAILY_JOB)
    instance = dg.DagsterInstance.ephemeral()
    raw_key, valid = (
        dg.AssetKey("raw_landing_events"),
        [dg.AssetKey("validated_events"), dg.AssetKey("quarantined_events")],
    )
    raw_run = job.execute_in_process(
        partition_key=DAY.isoformat(), instance=instance, asset_selection=[raw_key], raise_on_error=False
    )
    # The refusals fail the raw step (a blocking check); validation of what was read is its own run.
    valid_run = job.execute_in_process(partition_key=DAY.isoformat(), instance=instance, asset_selection=valid)
    fresh_run = job.execute_in_process(
        partition_key=FRESH_DAY.isoformat(), instance=instance, asset_selection=[raw_key], raise_on_error=False
    )
    with duckdb.connect(str(settings.warehouse), read_only=True) as conn:
        tables = {
            t: conn.execute(f"select * from {t}").pl() for t in ("raw_landing_events", *[k.path[-1] for k in valid])
        }
    return raw_run, valid_run, fresh_run, tables


def _check(run, day: date, name: str = FILES_CHECK):
    [evaluation] = [
        e for e in run.get_asset_check_evaluations() if e.check_name == name and e.partition == day.isoformat()
    ]
    return evaluation


def _by_file(frame: pl.DataFrame) -> dict[str, int]:
    """Rows per file of the corpus day, by the file's path within the day folder."""
    day = frame.filter(pl.col("_source_uri").str.starts_with(f"events/{DAY}/"))
    return {Path(uri).relative_to(f"events/{DAY}").as_posix(): n for uri, n in day.group_by("_source_uri").len().rows()}


def test_every_refusal_fails_the_file_check_naming_file_and_reason(landed):
    raw_run, _, _, _ = landed
    assert not raw_run.success
    check = _check(raw_run, DAY)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR and check.blocking
    refused = {Path(r["file"]).name: r["reason"] for r in check.metadata["refused"].value}
    assert refused.keys() == REFUSED.keys()
    for name, reason in REFUSED.items():
        assert reason in refused[name], name
    assert check.description.startswith(f"{len(REFUSED)} of ")
    assert "not fully read" in check.description and "swallow.csv" not in check.description


def test_each_file_adds_up_to_its_independent_count(landed):
    raw_run, _, _, tables = landed
    per_file = {
        Path(f["uri"]).relative_to(f"events/{DAY}").as_posix(): f
        for f in _check(raw_run, DAY).metadata["per_file"].value
    }
    written = _by_file(tables["raw_landing_events"])
    for name, (data, records, *_) in FILES.items():
        if records is None or name.endswith(("_SUCCESS", ".crc")):
            continue
        assert per_file[name]["unaccounted"] == 0, name
        assert written[name] == records == _independent_count(name, data), name
    assert sum(written.values()) == sum(r for _, r, *_ in FILES.values() if r)
    swallow = per_file["swallow.csv"]
    assert swallow["resynced"] == [3] and swallow["lines"] == 803  # 802 records and the header, one line each
    assert per_file["multiline.csv"]["multiline"] == [[2, 2]]
    assert per_file["gzip_named.csv"]["compression"] == "gzip" and per_file["zstd_named.csv"]["compression"] == "zstd"
    assert per_file["utf16_bom.csv"]["encoding"] == "utf-16-le (byte-order mark)"
    assert per_file["parquet_named.csv"]["format"] == "parquet"


def test_rows_read_are_published_or_quarantined_with_their_reason(landed):
    _, valid_run, _, tables = landed
    assert valid_run.success
    published, quarantined = _by_file(tables["validated_events"]), _by_file(tables["quarantined_events"])
    for name, (_, records, n_valid, n_quarantined) in FILES.items():
        if records:
            assert (published.get(name, 0), quarantined.get(name, 0)) == (n_valid, n_quarantined), name
    reasons = {
        (Path(row["_source_uri"]).name, row["_source_offset"]): row["reasons"]
        for row in tables["quarantined_events"].to_dicts()
    }
    [broken] = reasons[("swallow.csv", 3)]
    assert broken["rule"] == "read_error" and "line 3: unterminated quoted field" in broken["message"]
    [duplicated] = reasons[("duplicated_column.csv", 2)]
    assert "duplicated column name(s) ['user_id']" in duplicated["message"]
    multi = tables["validated_events"].filter(pl.col("event_id") == "m2")
    assert multi["_source_offset"].to_list() == [4]  # after a record spanning lines 2-3
    conservation = _check(valid_run, DAY, "rows_in_equal_valid_plus_quarantined")
    assert conservation.passed and conservation.metadata["rows_in"].value == sum(r for _, r, *_ in FILES.values() if r)


def test_a_file_still_being_written_is_refused(landed):
    _, _, fresh_run, tables = landed
    check = _check(fresh_run, FRESH_DAY)
    assert not fresh_run.success and not check.passed
    [refused] = check.metadata["refused"].value
    assert refused["file"] == f"events/{FRESH_DAY}/still_writing.csv"
    assert refused["reason"].startswith("still being written: modified")
    fresh = tables["raw_landing_events"].filter(pl.col("partition_date") == FRESH_DAY)
    assert fresh["_source_uri"].unique().to_list() == [f"events/{FRESH_DAY}/done.csv/part-00000.csv"]
    assert fresh.height == 3


def test_a_settled_file_is_read(landed, tmp_path):
    settings = Settings(home=tmp_path, start_date=DAY)
    path = settings.landing / "events" / FRESH_DAY.isoformat() / "settled.csv"
    path.parent.mkdir(parents=True)
    path.write_text(HEADER + rows("f", 2).replace("2024-01-05", "2024-01-06"))
    old = datetime.now(UTC).timestamp() - 60
    os.utime(path, (old, old))
    result = (
        build_defs(settings, landing_zone(settings, settle_s=30))
        .resolve_job_def(DAILY_JOB)
        .execute_in_process(partition_key=FRESH_DAY.isoformat(), asset_selection=[dg.AssetKey("raw_landing_events")])
    )
    assert _check(result, FRESH_DAY).passed
