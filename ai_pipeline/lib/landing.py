"""Landing files: `<root>/<folder>/<YYYY-MM-DD>/*.csv|*.jsonl|*.parquet` -> raw frames.

Every line of every file becomes a raw row or an input-level issue in the file's report; nothing is dropped
silently. Undecodable bytes, ragged CSV lines and broken JSON lines become rows with a read error that
names the file and line. Files outside the configured root (symlinks) are refused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
from pydantic import BaseModel

from ai_pipeline.lib.contracts import field_aliases
from ai_pipeline.lib.raw import SchemaReport, SourceMapping, empty_raw, text_value, to_raw
from ai_pipeline.lib.validation import compile_contract

SUPPORTED_SUFFIXES = (".csv", ".jsonl", ".parquet")
# Huge values must reach the contract (which rejects them with a reason), not crash the reader.
csv.field_size_limit(64 * 1024 * 1024)


@dataclass(frozen=True)
class FileRows:
    """One file read as strings: the columns as found, plus per-row lineage and read errors."""

    frame: pl.DataFrame
    offsets: list[int]
    read_errors: list[str | None]
    raw_json: list[str]
    type_changes: list[str]
    issue: str | None = None


def _printable(value: str) -> str:
    """Undecodable bytes (kept as surrogates) shown as \\xNN so they can be stored and read."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _has_undecodable(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def _unique_header(header: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for raw_name in header:
        name = _printable(raw_name.strip()) or "_unnamed"
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}__{seen[name]}")
    return names


def read_csv_rows(path: Path, uri: str) -> FileRows:
    data = path.read_bytes()
    text = data.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    if not text.strip():
        return FileRows(pl.DataFrame(), [], [], [], [], issue=f"{uri}: empty file")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = _unique_header(next(reader))
    columns: list[list[str | None]] = [[] for _ in header]
    offsets, errors, raws = [], [], []
    line = reader.line_num
    try:
        for fields in reader:
            start, line = line + 1, reader.line_num
            if not fields:
                continue  # a blank line carries no record
            error = None
            if len(fields) != len(header):
                error = f"{uri} line {start}: malformed CSV, expected {len(header)} fields, found {len(fields)}"
            bad = [header[i] if i < len(header) else f"#{i}" for i, v in enumerate(fields) if _has_undecodable(v)]
            if bad:
                error = f"{uri} line {start}: bytes that are not UTF-8 in {bad}"
            values = [_printable(v) for v in fields]
            for i, column in enumerate(columns):
                column.append(values[i] if i < len(values) and not error else None)
            offsets.append(start)
            errors.append(error)
            raws.append(json.dumps(dict(zip(header, values, strict=True)) if len(values) == len(header) else values))
    except csv.Error as exc:
        for column in columns:
            column.append(None)
        offsets.append(line + 1)
        errors.append(f"{uri} line {line + 1}: unreadable CSV ({exc}); the rest of the file is not read")
        raws.append(json.dumps([_printable(text.splitlines()[line])]))
    frame = pl.DataFrame(dict(zip(header, columns, strict=True)), schema=dict.fromkeys(header, pl.String))
    issue = f"{uri}: header only, no rows" if not offsets else None
    return FileRows(frame, offsets, errors, raws, [], issue=issue)


def read_jsonl_rows(path: Path, uri: str) -> FileRows:
    text = path.read_bytes().decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    records: list[dict[str, str | None]] = []
    offsets, errors, raws = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        error, record = None, {}
        if _has_undecodable(line):
            error = f"{uri} line {number}: bytes that are not UTF-8"
        else:
            try:
                parsed = json.loads(line, parse_float=Decimal)
            except json.JSONDecodeError as exc:
                error = f"{uri} line {number}: invalid JSON ({exc.msg} at column {exc.colno})"
            else:
                if isinstance(parsed, dict):
                    record = {str(k): text_value(v) for k, v in parsed.items()}
                else:
                    error = f"{uri} line {number}: a JSON {type(parsed).__name__}, not an object"
        records.append(record)
        offsets.append(number)
        errors.append(error)
        raws.append(_printable(line))
    if not records:
        return FileRows(pl.DataFrame(), [], [], [], [], issue=f"{uri}: empty file")
    names = list(dict.fromkeys(k for record in records for k in record))
    frame = pl.DataFrame({n: [r.get(n) for r in records] for n in names}, schema=dict.fromkeys(names, pl.String))
    return FileRows(frame, offsets, errors, raws, [])


_NUMERIC = (pl.Float32, pl.Float64, pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)


def _expected_kinds(model: type[BaseModel]) -> dict[str, str]:
    """Per contract field, the Parquet type family it must arrive in: string, number or time."""
    kinds = {}
    for compiled in compile_contract(model).fields:
        dtype = compiled.dtype
        kinds[compiled.name] = (
            "time" if dtype == pl.Datetime("us", "UTC") else ("number" if dtype in (pl.Float64, pl.Int64) else "string")
        )
    return kinds


def _kind_of(dtype: pl.DataType) -> str:
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        return "string"
    if isinstance(dtype, pl.Datetime):
        return "time"
    return "number" if dtype in _NUMERIC or isinstance(dtype, pl.Decimal) else dtype.__class__.__name__


def read_parquet_rows(path: Path, uri: str, model: type[BaseModel]) -> FileRows:
    table = pl.read_parquet(path)
    aliases, kinds = field_aliases(model), _expected_kinds(model)
    type_changes = []
    for name, dtype in table.schema.items():
        field = aliases.get(name)
        if field is None:
            continue
        found, expected = _kind_of(dtype), kinds[field]
        # Strings are always acceptable: the contract parses them.
        if found != expected and found != "string":
            type_changes.append(f"{name}: expected {expected}, found {dtype}")
    as_text = []
    for name, dtype in table.schema.items():
        column = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            utc = column.dt.replace_time_zone("UTC") if dtype.time_zone is None else column.dt.convert_time_zone("UTC")
            as_text.append(utc.dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").alias(name))
        else:
            as_text.append(column.cast(pl.String).alias(name))
    frame = table.select(as_text)
    if frame.height == 0:
        return FileRows(frame, [], [], [], type_changes, issue=f"{uri}: no rows")
    raws = frame.select(pl.struct(pl.all()).struct.json_encode()).to_series().to_list()
    return FileRows(frame, list(range(frame.height)), [None] * frame.height, raws, type_changes)


def _read_file(path: Path, uri: str, model: type[BaseModel]) -> FileRows:
    if path.suffix == ".csv":
        return read_csv_rows(path, uri)
    if path.suffix == ".jsonl":
        return read_jsonl_rows(path, uri)
    return read_parquet_rows(path, uri, model)


def day_files(root: Path, folder: str, day: date) -> tuple[list[Path], list[str]]:
    """The day's files in name order, and issues for what is refused (outside the root, unsupported)."""
    base = root.resolve()
    directory = root / folder / day.isoformat()
    if not directory.is_dir():
        return [], []
    files, issues = [], []
    for path in sorted(directory.iterdir()):
        uri = path.relative_to(root).as_posix()
        if not path.resolve().is_relative_to(base):
            issues.append(f"{uri}: refused, it points outside the landing root")
        elif path.is_dir() or path.name.startswith("."):
            continue
        elif path.suffix not in SUPPORTED_SUFFIXES:
            issues.append(f"{uri}: unsupported file type, expected one of {list(SUPPORTED_SUFFIXES)}")
        else:
            files.append(path)
    return files, issues


_DAY_FOLDER = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class LandingScan:
    """What a landing folder holds now, from file names and stat alone (no file is read).

    `fingerprints` has one entry per day folder with at least one readable file: a short hash of each file's
    (path, size, modification time), which changes when a file is added, removed, rewritten or touched.
    """

    fingerprints: dict[date, str]
    files: dict[date, int]
    issues: list[str]


def scan_landing(root: Path, folder: str) -> LandingScan:
    """Every day folder under `<root>/<folder>/`; entries that are not `YYYY-MM-DD` folders are issues."""
    base = root / folder
    fingerprints: dict[date, str] = {}
    counts: dict[date, int] = {}
    issues: list[str] = []
    if not base.is_dir():
        return LandingScan(fingerprints, counts, issues)
    for entry in sorted(base.iterdir()):
        if entry.name.startswith("."):
            continue
        uri = entry.relative_to(root).as_posix()
        try:
            day = date.fromisoformat(entry.name) if _DAY_FOLDER.fullmatch(entry.name) and entry.is_dir() else None
        except ValueError:
            day = None
        if day is None:
            issues.append(f"{uri}: not a day folder; files are read from {folder}/YYYY-MM-DD/")
            continue
        paths, refused = day_files(root, folder, day)
        issues.extend(refused)
        states = []
        for path in paths:
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # removed while scanning: the next scan sees the new state
            states.append((path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
        if states:
            fingerprints[day] = hashlib.sha256(json.dumps(states).encode()).hexdigest()[:16]
            counts[day] = len(states)
    return LandingScan(fingerprints, counts, issues)


@dataclass(frozen=True)
class LandingRead:
    raw: pl.DataFrame
    reports: list[SchemaReport]
    issues: list[str]

    @property
    def files(self) -> int:
        return len(self.reports)


def read_landing_day(
    root: Path,
    folder: str,
    day: date,
    model: type[BaseModel],
    *,
    source: str,
    ingested_at: datetime,
    mapping: SourceMapping | None = None,
) -> LandingRead:
    """All files of one day of one landing folder, as one raw frame."""
    paths, issues = day_files(root, folder, day)
    frames, reports = [empty_raw(model)], []
    for path in paths:
        uri = path.relative_to(root).as_posix()
        rows = _read_file(path, uri, model)
        if rows.issue:
            issues.append(rows.issue)
        if rows.frame.width == 0:
            reports.append(SchemaReport(uri=uri, rows=0, found=[], issue=rows.issue))
            continue
        frame, report = to_raw(
            rows.frame,
            model,
            partition_day=day,
            source=source,
            uri=uri,
            ingested_at=ingested_at,
            offsets=rows.offsets,
            read_errors=rows.read_errors,
            raw_json=rows.raw_json,
            mapping=mapping,
            type_changes=rows.type_changes,
        )
        report.issue = rows.issue
        frames.append(frame)
        reports.append(report)
    return LandingRead(pl.concat(frames, how="vertical"), reports, issues)
