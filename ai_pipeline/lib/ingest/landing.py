"""Landing files: `<root>/<folder>/<YYYY-MM-DD>/...` -> raw frames, with an account of every file.

What a day folder holds, and what becomes of it:
- **data files**: `.csv`, `.tsv`, `.jsonl`/`.ndjson`, `.json` (an array, or JSON Lines), `.parquet`/`.pq`, suffixes
  in any case, optionally compressed (`lib.formats` recognizes compression by content, whatever the name);
- **directories** (`events.csv/part-00000.csv`, as Spark writes them): one dataset, every data file inside read,
  each reported under its own path; a part file without a known suffix takes the directory's;
- **ignored**, by the Hadoop convention, and listed in the report: names starting with `.` or `_` (hidden files,
  `_SUCCESS`, checksum files);
- **refused**, each with its reason, which fails the source's file check: unsupported or temporary files
  (`.tmp`, `.part`, ...), links leading outside the landing root or nowhere, special files, files over the size
  limit, archives, undecodable content, files still being written (modified less than `settle_seconds` ago, unless
  the folder holds the completion marker `_SUCCESS`) and files that changed while being read.

Every record of a read file becomes a raw row (a broken one with its read error), and the file's report carries the
independent record count it must add up to (`FileReport.unaccounted == 0`).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import stat
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
from pydantic import BaseModel

from ai_pipeline.lib.ingest import formats
from ai_pipeline.lib.ingest.contracts import field_aliases
from ai_pipeline.lib.ingest.formats import ReadOptions, Records, Refused
from ai_pipeline.lib.ingest.raw import SchemaReport, SourceMapping, empty_raw, to_raw
from ai_pipeline.lib.ingest.routing import event_times
from ai_pipeline.lib.ingest.trees import flatten_trees
from ai_pipeline.lib.ingest.validation import compile_contract

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}
COMPRESSION_SUFFIXES = {".gz", ".gzip", ".bz2", ".xz", ".zst", ".zstd"}
TEMPORARY_SUFFIXES = {".tmp", ".temp", ".part", ".partial", ".crdownload", ".filepart", ".download", ".swp"}
COMPLETION_MARKER = "_SUCCESS"
DEFAULT_SETTLE_SECONDS = 30.0


def format_of(name: str, default: str | None = None) -> str | None:
    """The data format a file name announces (compression suffixes aside), or `default`."""
    suffixes = [s.lower() for s in Path(name).suffixes]
    while suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes.pop()
    return FORMATS.get(suffixes[-1], default) if suffixes else default


@dataclass(frozen=True)
class Candidate:
    path: Path
    uri: str
    format: str
    complete: bool  # its folder (the day's, or a dataset directory) holds the completion marker


@dataclass
class DayEntries:
    """What a day folder holds, from names and stat alone (no file is read)."""

    candidates: list[Candidate] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (uri, reason)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _walk(root: Path, path: Path, entries: DayEntries, dataset_format: str | None, complete: bool) -> None:
    """Classifies `path` (a file, a link or a directory) into `entries`; `complete`: a folder above it holds the
    completion marker."""
    uri = path.relative_to(root).as_posix()
    if path.name.startswith((".", "_")):
        entries.ignored.append(uri)
        return
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(root.resolve()):
            entries.refused.append((uri, "a link that leads outside the landing root"))
            return
        if not target.exists():
            entries.refused.append((uri, "a link that leads nowhere"))
            return
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        entries.refused.append((uri, f"cannot be read ({exc.strerror})"))
        return
    if stat.S_ISDIR(mode):
        before = len(entries.candidates) + len(entries.refused)
        complete = complete or (path / COMPLETION_MARKER).exists()
        for child in sorted(path.iterdir()):
            _walk(root, child, entries, format_of(path.name, dataset_format), complete)
        if len(entries.candidates) + len(entries.refused) == before:
            entries.notes.append(f"{uri}/: a directory without data files")
        return
    if not stat.S_ISREG(mode):
        entries.refused.append((uri, "not a regular file (a pipe, socket or device)"))
        return
    suffix = path.suffix.lower()
    if suffix in TEMPORARY_SUFFIXES or path.name.endswith("~"):
        entries.refused.append((uri, "a temporary file: its writer has not finished (or left it behind)"))
        return
    kind = format_of(path.name, dataset_format)
    if kind is None:
        entries.refused.append(
            (uri, f"unsupported file type, expected one of {sorted(FORMATS)} (optionally compressed)")
        )
        return
    entries.candidates.append(Candidate(path, uri, kind, complete))


def day_entries(root: Path, folder: str, day: date) -> DayEntries:
    directory = root / folder / day.isoformat()
    entries = DayEntries()
    if not directory.is_dir():
        return entries
    complete = (directory / COMPLETION_MARKER).exists()
    for path in sorted(directory.iterdir()):
        _walk(root, path, entries, None, complete)
    return entries


def _settling(path: Path, now: datetime, settle_seconds: float) -> float | None:
    """Seconds since the file was last modified, if that is less than the settle interval."""
    age = now.timestamp() - path.stat().st_mtime
    return age if age < settle_seconds else None


@dataclass
class FileReport:
    """One landing file: how it was read, what it held (counted independently) and what became of it."""

    uri: str
    status: str  # "read" or "refused"
    reason: str | None = None  # why it was refused
    format: str | None = None
    bytes: int = 0
    compression: str | None = None
    encoding: str | None = None
    lines: int | None = None  # the independent count: physical lines, or the Parquet footer's row count
    rows: int = 0  # raw rows produced
    header_lines: int = 0
    blank_lines: int = 0
    multiline: list[tuple[int, int]] = field(default_factory=list)  # (first line, lines) of multi-line records
    resynced: list[int] = field(default_factory=list)  # lines quarantined as an unterminated quoted field
    unaccounted: int = 0  # independent count minus what the reader accounted for
    records_counted: int | None = None  # where a line holds several records (trees): their independent count
    uncounted: int = 0  # records counted minus records read
    schema: SchemaReport | None = None

    @property
    def data_lines(self) -> int:
        """Lines holding records (a record with a quoted line break holds several)."""
        return (self.lines or 0) - self.header_lines - self.blank_lines

    @property
    def note(self) -> str | None:
        if self.status == "read" and self.rows == 0:
            return f"{self.uri}: empty file" if not self.header_lines else f"{self.uri}: header only, no rows"
        return None

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "schema"}
        return {**out, "schema_error": self.schema.error if self.schema else None}


@dataclass(frozen=True)
class LandingRead:
    raw: pl.DataFrame
    files: list[FileReport]
    ignored: list[str]
    notes: list[str]

    @property
    def reports(self) -> list[SchemaReport]:
        return [f.schema for f in self.files if f.schema is not None]

    @property
    def refused(self) -> list[FileReport]:
        return [f for f in self.files if f.status == "refused"]


_NUMERIC = (pl.Float32, pl.Float64, pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)


def _expected_kinds(model: type[BaseModel]) -> dict[str, str]:
    """Per contract field, the Parquet type family it must arrive in: string, number, time or boolean."""
    kinds = {}
    for compiled in compile_contract(model).fields:
        dtype = compiled.dtype
        if dtype == pl.Datetime("us", "UTC"):
            kinds[compiled.name] = "time"
        elif dtype == pl.Boolean:
            kinds[compiled.name] = "boolean"
        else:
            kinds[compiled.name] = "number" if dtype in (pl.Float64, pl.Int64) else "string"
    return kinds


def _kind_of(dtype: pl.DataType) -> str:
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        return "string"
    if isinstance(dtype, pl.Datetime):
        return "time"
    if dtype == pl.Boolean:
        return "boolean"
    return "number" if dtype in _NUMERIC or isinstance(dtype, pl.Decimal) else dtype.__class__.__name__


def type_changes(schema: dict[str, pl.DataType], model: type[BaseModel], mapping: SourceMapping | None) -> list[str]:
    """Typed columns (Parquet) whose type family is not the contract field's. Strings are always acceptable."""
    aliases, kinds = field_aliases(model), _expected_kinds(model)
    renames = mapping.renames if mapping else {}
    changes = []
    for name, dtype in schema.items():
        target = renames.get(name) or aliases.get(name)
        if target is None or target not in kinds:
            continue
        found, expected = _kind_of(dtype), kinds[target]
        if found != expected and found != "string":
            changes.append(f"{name}: expected {expected}, found {dtype}")
    return changes


def read_records(candidate: Candidate, options: ReadOptions) -> tuple[Records, FileReport]:
    """One file's records and its report (status "read"); raises `Refused` for a file that cannot be read.

    Content decides over the name: compressed bytes are decompressed, and Parquet bytes are read as Parquet.
    """
    report = FileReport(candidate.uri, "read", format=candidate.format, bytes=candidate.path.stat().st_size)
    data, report.compression = formats.read_bytes(candidate.path, options.max_bytes)
    if data.startswith(formats.PARQUET_MAGIC):
        report.format = "parquet"
        return formats.read_parquet(io.BytesIO(data)), report
    if candidate.format == "parquet":
        raise Refused("not a Parquet file (no PAR1 magic bytes)")
    text, report.encoding = formats.decode(data, options.encoding)
    if options.tree is not None:
        if candidate.format not in ("json", "jsonl"):
            raise Refused(f"a source of message trees reads JSON only, not {candidate.format}")
        records = (
            formats.read_json(text, candidate.uri)
            if candidate.format == "json"
            else formats.read_jsonl(text, candidate.uri)
        )
        return flatten_trees(records, options.tree, candidate.uri), report
    if candidate.format in ("csv", "tsv"):
        delimiter = options.delimiter or ("\t" if candidate.format == "tsv" else ",")
        return formats.read_csv(text, candidate.uri, delimiter, options.max_record_lines), report
    if candidate.format == "json":
        return formats.read_json(text, candidate.uri), report
    return formats.read_jsonl(text, candidate.uri), report


def read_landing_day(
    root: Path,
    folder: str,
    day: date,
    model: type[BaseModel],
    *,
    source: str,
    ingested_at: datetime,
    mapping: SourceMapping | None = None,
    options: ReadOptions | None = None,
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
) -> LandingRead:
    """Every file of one day of one landing folder: one raw frame, and a report per file (read or refused)."""
    options = options or ReadOptions()
    entries = day_entries(root, folder, day)
    files = [FileReport(uri, "refused", reason=reason) for uri, reason in entries.refused]
    frames = [empty_raw(model)]
    now = datetime.now(UTC)
    for candidate in entries.candidates:
        before = candidate.path.stat()
        try:
            age = None if candidate.complete else _settling(candidate.path, now, settle_seconds)
            if age is not None:
                raise Refused(
                    f"still being written: modified {age:.0f} s ago, less than the {settle_seconds:g} s it must stay "
                    f"unchanged (or the folder's {COMPLETION_MARKER} marker)"
                )
            records, report = read_records(candidate, options)
            after = candidate.path.stat()
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                raise Refused("changed while being read: still being written")
        except Refused as refusal:
            files.append(
                FileReport(
                    candidate.uri,
                    "refused",
                    reason=refusal.reason,
                    format=candidate.format,
                    bytes=before.st_size,
                    lines=refusal.lines,
                )
            )
            continue
        report.lines = records.lines
        report.header_lines, report.blank_lines = records.header_lines, records.blank_lines
        report.multiline = records.multiline
        report.resynced = records.resynced
        report.unaccounted = records.unaccounted
        report.records_counted, report.uncounted = records.counted, records.uncounted
        report.rows = records.rows
        if records.frame.width or records.rows:
            frame, schema = to_raw(
                records.frame,
                model,
                partition_day=day,
                source=source,
                uri=candidate.uri,
                ingested_at=ingested_at,
                offsets=records.offsets,
                read_errors=records.read_errors,
                raw_json=records.raw_json,
                mapping=mapping,
                type_changes=type_changes(records.schema, model, mapping) if records.schema else [],
                columns_found=records.columns,
            )
            frames.append(frame)
            report.schema = schema
        files.append(report)
    files.sort(key=lambda f: f.uri)
    notes = entries.notes + [f.note for f in files if f.note]
    return LandingRead(pl.concat(frames, how="vertical"), files, entries.ignored, notes)


def event_days(
    path: Path, model: type[BaseModel], mapping: SourceMapping | None = None, options: ReadOptions | None = None
) -> list[date]:
    """The distinct UTC days of a file's readable event times, read as its source reads it (an export's span)."""
    candidate = Candidate(path, path.name, format_of(path.name, "csv"), complete=True)
    records, _ = read_records(candidate, options or ReadOptions())
    frame, _ = to_raw(
        records.frame,
        model,
        partition_day=date.min,
        source="",
        uri=path.name,
        ingested_at=datetime.now(UTC),
        offsets=records.offsets,
        read_errors=records.read_errors,
        mapping=mapping,
        columns_found=records.columns,
    )
    times = event_times(frame, model) if frame.height else None
    return [] if times is None else sorted(times.drop_nulls().dt.date().unique().to_list())


_DAY_FOLDER = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class LandingScan:
    """What a landing folder holds now, from names and stat alone (no file is read).

    `fingerprints` has one entry per day folder whose files have all settled (unchanged for the settle interval,
    or the folder holds the completion marker) and hold at least one data file or refusal: a short hash of each
    entry's (path, size, modification time), which changes when a file is added, removed, rewritten or touched.
    `waiting` lists, per day, the files still being written: that day is not requested until they settle.
    """

    fingerprints: dict[date, str]
    files: dict[date, int]
    issues: list[str]
    waiting: dict[date, list[str]] = field(default_factory=dict)


def scan_landing(
    root: Path, folder: str, *, settle_seconds: float = DEFAULT_SETTLE_SECONDS, now: datetime | None = None
) -> LandingScan:
    """Every day folder under `<root>/<folder>/`; entries that are not `YYYY-MM-DD` folders are issues."""
    base = root / folder
    now = now or datetime.now(UTC)
    fingerprints: dict[date, str] = {}
    counts: dict[date, int] = {}
    waiting: dict[date, list[str]] = {}
    issues: list[str] = []
    if not base.is_dir():
        return LandingScan(fingerprints, counts, issues, waiting)
    for entry in sorted(base.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        uri = entry.relative_to(root).as_posix()
        try:
            day = date.fromisoformat(entry.name) if _DAY_FOLDER.fullmatch(entry.name) and entry.is_dir() else None
        except ValueError:
            day = None
        if day is None:
            issues.append(f"{uri}: not a day folder; files are read from {folder}/YYYY-MM-DD/")
            continue
        entries = day_entries(root, folder, day)
        states, pending = _day_states(entries, now, settle_seconds)
        issues.extend(f"{uri}: refused, {reason}" for uri, reason in entries.refused)
        if pending:
            waiting[day] = pending
        elif states:
            fingerprints[day] = _fingerprint(states)
            counts[day] = len(states)
    return LandingScan(fingerprints, counts, issues, waiting)


def day_fingerprint(root: Path, folder: str, day: date) -> str | None:
    """The fingerprint `scan_landing` gives the day's folder now (None when it holds nothing), whether or not its
    files have settled: what a reader of the day records, so that a scan can tell the state was read."""
    states, _ = _day_states(day_entries(root, folder, day), datetime.now(UTC), 0.0)
    return _fingerprint(states) if states else None


def _day_states(entries: DayEntries, now: datetime, settle_seconds: float) -> tuple[list[tuple], list[str]]:
    """Each entry's (path, size, modification time), or (path, refusal); and the files not settled yet."""
    states, pending = [], []
    for candidate in entries.candidates:
        try:
            st = candidate.path.stat()
        except FileNotFoundError:
            continue  # removed while scanning: the next scan sees the new state
        if not candidate.complete and now.timestamp() - st.st_mtime < settle_seconds:
            pending.append(candidate.uri)
        states.append((candidate.uri, st.st_size, st.st_mtime_ns))
    states.extend((uri, reason) for uri, reason in entries.refused)
    return states, pending


def _fingerprint(states: list[tuple]) -> str:
    return hashlib.sha256(json.dumps(states).encode()).hexdigest()[:16]
