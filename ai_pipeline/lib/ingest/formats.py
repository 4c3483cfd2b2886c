"""What one landing file holds: its bytes decompressed and decoded, split into records that are counted
independently of the parser that reads them.

- **Compression** is recognized by content, whatever the file is called: gzip, bzip2, xz and zstd are
  decompressed (up to `ReadOptions.max_bytes`, so a small bomb cannot fill memory); ZIP archives and other
  containers are refused with a reason.
- **Encoding**: a byte-order mark decides (UTF-8, UTF-16 and UTF-32, either byte order); otherwise the source's
  declared encoding, else UTF-8. Bytes that do not decode are kept (as `\\xNN`) and make their line a read error.
  Text with NUL bytes and no byte-order mark is binary or UTF-16/32 without a mark: refused, not guessed.
- **Records are counted without the parser.** CSV and JSON Lines: the physical lines (`\\n`, `\\r\\n` or `\\r`),
  counted on the whole text by one regular expression; Parquet: the row count in its footer. Each record the
  reader returns says which lines it spans, and the file's accounting must add up to the independent count.
- **CSV resynchronizes.** A quoted field may legitimately span lines (RFC 4180), but only when its quote closes
  within `max_record_lines` lines and the record then has exactly the header's number of fields. Otherwise the
  line that opened the quote becomes one read error ("unterminated quoted field") and reading resumes on the next
  line: a stray quote costs one record, never the rest of the file.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal

import polars as pl

from ai_pipeline.lib.ingest.raw import text_value

# Huge values must reach the contract (which rejects them with a reason), not crash the reader.
csv.field_size_limit(64 * 1024 * 1024)

DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_MAX_RECORD_LINES = 100


class Refused(Exception):
    """A whole file that is not read; the message says why. `lines` is its independent count when it is known."""

    def __init__(self, reason: str, lines: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.lines = lines


@dataclass(frozen=True)
class TreeShape:
    """JSON records that each hold a tree of messages (`lib.ingest.trees`)."""

    children: str  # the key of a message's replies
    id: str  # the key of a message's id: what the independent count looks for
    root: str | None = None  # the key of the root message in each record (None: the record is the root message)
    inherit: tuple[str, ...] = ()  # the record's fields every message of its tree carries


@dataclass(frozen=True)
class ReadOptions:
    encoding: str | None = None  # declared by the source; a byte-order mark still wins
    delimiter: str | None = None  # None: "," for CSV, tab for TSV
    max_bytes: int = DEFAULT_MAX_BYTES  # after decompression
    max_record_lines: int = DEFAULT_MAX_RECORD_LINES
    tree: TreeShape | None = None  # JSON sources only: one row per message of each record's tree


# ------------------------------------------------------------------------------------------------ bytes

_MAGIC: list[tuple[bytes, str]] = [
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!\x1a\x07", "rar"),
]
PARQUET_MAGIC = b"PAR1"


def sniff_compression(head: bytes) -> str | None:
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def _decompressor(name: str, raw: io.BufferedIOBase) -> io.BufferedIOBase:
    if name == "gzip":
        return gzip.GzipFile(fileobj=raw)
    if name == "bzip2":
        return bz2.BZ2File(raw)
    if name == "xz":
        return lzma.LZMAFile(raw)
    import zstandard

    return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)


def read_bytes(path, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[bytes, str | None]:
    """The file's content, decompressed when its first bytes say so; (content, compression or None)."""
    with open(path, "rb") as raw:
        compression = sniff_compression(raw.read(8))
        raw.seek(0)
        if compression is None:
            data = raw.read(max_bytes + 1)
        elif compression in ("zip", "lz4", "7z", "rar"):
            raise Refused(f"a {compression} archive, not a data file: unpack it into the day folder")
        else:
            try:
                with _decompressor(compression, raw) as stream:
                    data = stream.read(max_bytes + 1)
            except Exception as exc:  # OSError, EOFError, LZMAError, zstandard.ZstdError...: a damaged stream
                raise Refused(f"{compression}-compressed but cannot be decompressed ({exc})") from exc
    if len(data) > max_bytes:
        what = "decompressed size" if compression else "size"
        raise Refused(f"{what} over the limit of {max_bytes:,} bytes")
    return data, compression


_BOMS: list[tuple[bytes, str]] = [
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xfe\xff", "utf-16-be"),
    (b"\xff\xfe", "utf-16-le"),
]


def decode(data: bytes, declared: str | None = None) -> tuple[str, str]:
    """(text, encoding used). Undecodable bytes stay in the text as surrogates (see `printable`)."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(encoding), f"{encoding} (byte-order mark)"
            except UnicodeDecodeError as exc:
                raise Refused(f"starts with a {encoding} byte-order mark but does not decode as {encoding}") from exc
    if declared:
        return data.decode(declared, "surrogateescape"), declared
    if b"\x00" in data:
        raise Refused(
            "binary content (NUL bytes) and no byte-order mark: not text, or UTF-16/32 without a mark "
            "(declare the source's encoding)"
        )
    return data.decode("utf-8", "surrogateescape"), "utf-8"


def printable(value: str) -> str:
    """Undecodable bytes (kept as surrogates) shown as \\xNN so they can be stored and read."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def has_undecodable(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


# ------------------------------------------------------------------------------------------------ lines

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
_TERMINATOR = re.compile(r"\r\n|\r|\n")


def count_lines(text: str) -> int:
    """Physical lines, as an editor numbers them: terminators, plus a last line without one."""
    terminators = len(_TERMINATOR.findall(text))
    return terminators + (1 if text and not text.endswith(("\n", "\r")) else 0)


def split_lines(text: str) -> list[str]:
    """The physical lines, each with its terminator."""
    return _LINE.findall(text)


# ------------------------------------------------------------------------------------------------ records


@dataclass
class Records:
    """One file read into string columns, with per-record lineage and what the reading saw.

    `lines` is the independent count (physical lines, or the Parquet footer's row count); the reader's accounting
    (`header_lines + blank_lines + sum(spans)`) must equal it.
    """

    columns: list[str]  # as found (duplicates included)
    frame: pl.DataFrame  # string columns, unique names
    offsets: list[int]  # first physical line (1-based), or the row index for Parquet
    spans: list[int]  # physical lines each record spans (1 for Parquet rows)
    read_errors: list[str | None]
    raw_json: list[str]
    lines: int  # independent count
    header_lines: int = 0
    blank_lines: int = 0
    resynced: list[int] = field(default_factory=list)  # lines quarantined as an unterminated quoted field
    schema: dict[str, pl.DataType] | None = None  # Parquet: the file's own types
    counted: int | None = None  # records counted independently when a line holds several (`lib.ingest.trees`)

    @property
    def rows(self) -> int:
        return len(self.offsets)

    @property
    def multiline(self) -> list[tuple[int, int]]:
        """(first line, lines spanned) of each record spanning several lines."""
        return [(o, s) for o, s in zip(self.offsets, self.spans, strict=True) if s > 1]

    @property
    def unaccounted(self) -> int:
        """Independent count minus what the reader accounted for: 0 when nothing was lost or invented."""
        return self.lines - self.header_lines - self.blank_lines - sum(self.spans)

    @property
    def uncounted(self) -> int:
        """Where a line holds several records: records counted independently minus records read."""
        return self.counted - self.rows if self.counted is not None else 0


def unique_names(header: list[str]) -> list[str]:
    """Column names for a frame: later copies of a name get `__2`, `__3` (`raw.conform` reports the duplicates)."""
    seen: dict[str, int] = {}
    names = []
    for raw_name in header:
        name = printable(raw_name.strip()) or "_unnamed"
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}__{seen[name]}")
    return names


class _Feed:
    """The physical lines from `start`, for `csv.reader`; it stops a record that wants more than `limit` lines."""

    def __init__(self, lines: list[str], start: int, limit: int):
        self.lines, self.pos, self.limit = lines, start, limit
        self.record_start = start
        self.cut = False

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self.pos >= len(self.lines) or self.pos - self.record_start >= self.limit:
            self.cut = self.pos < len(self.lines)
            raise StopIteration
        self.pos += 1
        return self.lines[self.pos - 1]


def _closed(lines: list[str], delimiter: str) -> bool:
    """Whether the quotes of a record (its physical lines) all close: the non-strict reader does not say."""
    try:
        for _ in csv.reader(lines, delimiter=delimiter, strict=True):
            pass
    except csv.Error:
        return False
    return True


def read_csv(text: str, uri: str, delimiter: str = ",", max_record_lines: int = DEFAULT_MAX_RECORD_LINES) -> Records:
    lines = split_lines(text)
    total = count_lines(text)
    blank = 0
    first = 0
    while first < len(lines) and not lines[first].strip():
        first += 1
        blank += 1
    if first == len(lines):
        return Records([], pl.DataFrame(), [], [], [], [], total, blank_lines=blank)
    header = next(csv.reader([lines[first]], delimiter=delimiter))
    names = unique_names(header)
    columns: list[list[str | None]] = [[] for _ in names]
    offsets, spans, errors, raws, resynced = [], [], [], [], []

    def add(start: int, span: int, fields: list[str], error: str | None) -> None:
        values = [printable(v) for v in fields]
        for i, column in enumerate(columns):
            column.append(values[i] if i < len(values) and not error else None)
        offsets.append(start + 1)
        spans.append(span)
        errors.append(error)
        raws.append(json.dumps(dict(zip(names, values, strict=True)) if len(values) == len(names) else values))

    position = first + 1
    while position < len(lines):
        feed = _Feed(lines, position, max_record_lines)
        reader = csv.reader(feed, delimiter=delimiter)
        resume = None
        while True:
            start = feed.record_start = feed.pos
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:  # e.g. a NUL byte in older Pythons: this line alone is unreadable
                add(start, 1, [lines[start].rstrip("\r\n")], f"{uri} line {start + 1}: unreadable CSV ({exc})")
                resume = start + 1
                break
            span = feed.pos - start
            if not "".join(fields).strip() and len(fields) <= 1:
                blank += span
                continue
            # The non-strict reader returns a quote left open at the end of its input as if it had closed.
            if feed.cut or span > 1 or feed.pos == len(lines):
                closed = not feed.cut and _closed(lines[start : feed.pos], delimiter)
                if not closed or (span > 1 and len(fields) != len(names)):
                    resume = start
                    break
            error = None
            if len(fields) != len(names):
                error = f"{uri} line {start + 1}: malformed CSV, expected {len(names)} fields, found {len(fields)}"
            bad = [names[i] if i < len(names) else f"#{i}" for i, v in enumerate(fields) if has_undecodable(v)]
            if bad:
                error = f"{uri} line {start + 1}: bytes that are not UTF-8 in {bad}"
            add(start, span, fields, error)
        if resume is None:
            break
        # Resynchronize: the line that opened a quote that never closed (in time, or with the header's field count)
        # is one unreadable record; reading starts again on the next physical line.
        line = lines[resume].rstrip("\r\n")
        resynced.append(resume + 1)
        add(
            resume,
            1,
            [line],
            f"{uri} line {resume + 1}: unterminated quoted field (no closing quote within {max_record_lines} lines "
            "giving the header's field count); this line is quarantined and reading resumes on the next line",
        )
        position = resume + 1
    frame = pl.DataFrame(dict(zip(names, columns, strict=True)), schema=dict.fromkeys(names, pl.String))
    return Records(
        header, frame, offsets, spans, errors, raws, total, header_lines=1, blank_lines=blank, resynced=resynced
    )


def _pairs_without_duplicates(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    duplicated = sorted({k for k in keys if keys.count(k) > 1})
    if duplicated:
        raise ValueError(f"duplicated key(s) {duplicated}")
    return dict(pairs)


def _json_record(item: object) -> tuple[dict[str, str | None], str | None]:
    if isinstance(item, dict):
        return {str(k): text_value(v) for k, v in item.items()}, None
    return {}, f"a JSON {type(item).__name__}, not an object"


def records_frame(records: list[dict[str, str | None]]) -> tuple[list[str], pl.DataFrame]:
    names = list(dict.fromkeys(k for record in records for k in record))
    frame = pl.DataFrame({n: [r.get(n) for r in records] for n in names}, schema=dict.fromkeys(names, pl.String))
    return names, frame


def read_jsonl(text: str, uri: str) -> Records:
    records: list[dict[str, str | None]] = []
    offsets, errors, raws = [], [], []
    blank = 0
    for number, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            blank += 1
            continue
        line = line.rstrip("\r\n")
        error, record = None, {}
        if has_undecodable(line):
            error = "bytes that are not UTF-8"
        else:
            try:
                parsed = json.loads(line, parse_float=Decimal, object_pairs_hook=_pairs_without_duplicates)
            except json.JSONDecodeError as exc:
                error = f"invalid JSON ({exc.msg} at column {exc.colno})"
            except ValueError as exc:
                error = f"invalid JSON object ({exc})"
            else:
                record, error = _json_record(parsed)
        records.append(record)
        offsets.append(number)
        errors.append(f"{uri} line {number}: {error}" if error else None)
        raws.append(printable(line))
    names, frame = records_frame(records)
    return Records(names, frame, offsets, [1] * len(offsets), errors, raws, count_lines(text), blank_lines=blank)


def read_json(text: str, uri: str) -> Records:
    """A JSON array of objects (one record per element); anything else is read as JSON Lines."""
    if not text.lstrip().startswith("["):
        return read_jsonl(text, uri)
    try:
        items = json.loads(text, parse_float=Decimal, object_pairs_hook=_pairs_without_duplicates)
    except ValueError as exc:
        raise Refused(f"not a readable JSON array ({exc})") from exc
    if not isinstance(items, list):
        raise Refused("not a JSON array of records")
    records, errors = [], []
    for index, item in enumerate(items):
        record, error = _json_record(item)
        records.append(record)
        errors.append(f"{uri} element {index}: {error}" if error else None)
    names, frame = records_frame(records)
    raws = [json.dumps(item, default=str, ensure_ascii=False) for item in items]
    return Records(names, frame, list(range(len(items))), [1] * len(items), errors, raws, len(items))


def read_parquet(source: io.BytesIO) -> Records:
    """A Parquet file's rows as strings (times in UTC ISO 8601); the independent count is its footer's."""
    import pyarrow.parquet as pq

    try:
        counted = pq.ParquetFile(source).metadata.num_rows
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise Refused(f"not a readable Parquet file ({exc})") from exc
    try:
        source.seek(0)
        table = pl.read_parquet(source)
    except Exception as exc:
        raise Refused(f"Parquet data cannot be read ({exc})", lines=counted) from exc
    as_text = []
    for name, dtype in table.schema.items():
        column = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            utc = column.dt.replace_time_zone("UTC") if dtype.time_zone is None else column.dt.convert_time_zone("UTC")
            as_text.append(utc.dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").alias(name))
        elif dtype.is_nested():  # lists and structs as the JSON a text export would carry
            encoded = pl.struct(column.alias("v")).struct.json_encode().str.slice(5, None).str.head(-1)
            as_text.append(pl.when(column.is_null()).then(None).otherwise(encoded).alias(name))
        elif dtype == pl.Binary:
            as_text.append((pl.lit("\\x") + column.bin.encode("hex")).alias(name))
        else:
            as_text.append(column.cast(pl.String).alias(name))
    frame = table.select(as_text)
    raws = frame.select(pl.struct(pl.all()).struct.json_encode()).to_series().to_list() if frame.width else []
    n = frame.height
    return Records(
        list(table.columns), frame, list(range(n)), [1] * n, [None] * n, raws, counted, schema=dict(table.schema)
    )
