"""Raw records: every source's rows in one shape, with lineage, before any validation.

A raw frame holds the contract's columns as strings (as the source sent them, after declared renames and
an optional mapping function), the original record as JSON, where it came from, and a read error when the
row could not be read (malformed line, undecodable bytes, a file missing required columns). Nothing is
dropped here: the validator decides, and quarantines with reasons.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import polars as pl
from pydantic import BaseModel

from ai_pipeline.lib.ingest.contracts import field_aliases, required_fields

# Where a row came from: kept on raw, validated and quarantined rows alike. `partition_date` is the table's own
# partition: the day the row arrived on (raw tables), the day it is validated in (validated and quarantined).
LINEAGE_SCHEMA: dict[str, pl.DataType] = {
    "partition_date": pl.Date(),
    "_source": pl.String(),
    "_source_uri": pl.String(),
    "_source_offset": pl.Int64(),
    "_source_page": pl.Int64(),
    "_ingested_at": pl.Datetime("us", "UTC"),
    "_arrival_date": pl.Date(),
}
# Raw rows also carry the day they are validated in and why it is not their own (`lib.routing`), the record as
# sent and why it could not be read.
RECORD_SCHEMA: dict[str, pl.DataType] = {
    **LINEAGE_SCHEMA,
    "_event_date": pl.Date(),
    "_routing": pl.String(),
    "_raw": pl.String(),
    "_read_error": pl.String(),
}


def decimal_text(value: Decimal) -> str:
    """A plain decimal string without exponent; NaN/infinities as `nan`/`inf`/`-inf`."""
    if value.is_nan():
        return "nan"
    if value.is_infinite():
        return "-inf" if value < 0 else "inf"
    return format(value, "f")


def float_text(value: float) -> str:
    """Shortest round-trip digits, without exponent; `nan`/`inf`/`-inf`."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "-inf" if value < 0 else "inf"
    return format(Decimal(repr(value)), "f")


def text_value(value: Any) -> str | None:
    """A typed value (from a database, JSON or Parquet) -> the string a CSV would have carried.

    Numbers keep their digits without exponent (the contract's decimal pattern rejects what is not plain);
    NaN and infinities become `nan`/`inf` so that validation rejects them; aware times become UTC with `Z`.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return float_text(value)
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.isoformat()
        return value.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, memoryview | bytes | bytearray):
        return "\\x" + bytes(value).hex()
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=text_value)
    return str(value)


def raw_schema(model: type[BaseModel]) -> dict[str, pl.DataType]:
    """Column order is part of the table's contract (the DuckDB IO manager inserts by position)."""
    return {**RECORD_SCHEMA, **{name: pl.String() for name in model.model_fields}}


def empty_raw(model: type[BaseModel]) -> pl.DataFrame:
    return pl.DataFrame(schema=raw_schema(model))


@dataclass(frozen=True)
class SourceMapping:
    """How a source's own columns become the contract's (declared per source: `lib.mapping`).

    - `renames`: source column -> contract field, on top of the aliases the contract itself declares.
    - `required_columns`: source columns that must be present (default: the contract's required fields,
      under any accepted name).
    - `derive`: `(source frame, contract columns found so far) -> contract columns`, for values that need
      computing (e.g. amount = quantity * unit price); a `ValueError` it raises is the input's schema error.
    """

    renames: Mapping[str, str] = field(default_factory=dict)
    required_columns: tuple[str, ...] | None = None
    derive: Callable[[pl.DataFrame, pl.DataFrame], pl.DataFrame] | None = None


@dataclass
class SchemaReport:
    """What one unit of input (a file, a query, an API response set) looked like against the contract."""

    uri: str
    rows: int
    found: list[str]
    aliased: dict[str, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    missing_required: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)  # column names found more than once
    derive_error: str | None = None  # a declared expression that failed on this input
    missing_optional: list[str] = field(default_factory=list)
    type_changes: list[str] = field(default_factory=list)
    issue: str | None = None  # an input-level problem with no row to carry it (empty file, header only)

    @property
    def error(self) -> str | None:
        """A problem that makes every row of this input unusable; None when the schema holds."""
        problems = []
        if self.duplicated:
            problems.append(f"duplicated column name(s) {self.duplicated}: which copy holds the value is unknown")
        if self.missing_required:
            problems.append(f"missing required column(s) {self.missing_required}")
        if self.type_changes:
            problems.append(f"changed type(s) {self.type_changes}")
        if self.derive_error:
            problems.append(f"cannot derive {self.derive_error}")
        if not problems:
            return None
        return f"schema of {self.uri}: {'; '.join(problems)}; found columns {self.found}"

    def as_dict(self) -> dict:
        return {**self.__dict__, "error": self.error}


def conform(
    frame: pl.DataFrame,
    model: type[BaseModel],
    *,
    uri: str,
    mapping: SourceMapping | None = None,
    type_changes: list[str] | None = None,
    height: int | None = None,
    columns_found: list[str] | None = None,
) -> tuple[pl.DataFrame, SchemaReport]:
    """Source columns (strings) -> contract columns (strings), and a report of what was found.

    `height` is the row count when `frame` has no column to carry it (rows that are not objects);
    `columns_found` the header as the file had it, when the frame's names had to be made unique.
    """
    mapping = mapping or SourceMapping()
    found = list(frame.columns)
    height = frame.height if height is None else height
    header = list(columns_found) if columns_found is not None else found
    report = SchemaReport(uri=uri, rows=height, found=header, type_changes=list(type_changes or []))
    # Unnamed columns (an exported index, trailing delimiters) are unknown columns, not duplicates.
    named = Counter(c.strip() for c in header if c.strip())
    report.duplicated = sorted(name for name, count in named.items() if count > 1)
    aliases = field_aliases(model)
    consumed = set(mapping.required_columns or ())
    renamed: dict[str, str] = {}
    for column in found:
        target = mapping.renames.get(column) or aliases.get(column)
        if target is None:
            if column not in consumed:
                report.unknown.append(column)
        elif target not in renamed.values():
            renamed[column] = target
            if column != target:
                report.aliased[column] = target
        else:
            report.unknown.append(column)
    # An input without any column (an API day of non-objects) has no schema to judge.
    if found and mapping.required_columns is not None:
        report.missing_required = [c for c in mapping.required_columns if c not in found]
    elif found:
        report.missing_required = [f for f in required_fields(model) if f not in renamed.values()]
    out = frame.select([pl.col(src).cast(pl.String).alias(dst) for src, dst in renamed.items()])
    if mapping.derive is not None and found and not report.missing_required:
        try:
            out = mapping.derive(frame, out)
        except ValueError as exc:
            report.derive_error = str(exc)
    required = required_fields(model)
    report.missing_optional = [n for n in model.model_fields if n not in out.columns and n not in required]
    # Built from series, so that rows without any known column keep their count.
    columns = [
        out[name].cast(pl.String) if name in out.columns else pl.Series(name, [None] * height, pl.String)
        for name in model.model_fields
    ]
    return pl.DataFrame(columns), report


def to_raw(
    frame: pl.DataFrame,
    model: type[BaseModel],
    *,
    partition_day: date,
    source: str,
    uri: str,
    ingested_at: datetime,
    offsets: pl.Series | list[int] | None = None,
    pages: pl.Series | list[int | None] | None = None,
    read_errors: pl.Series | list[str | None] | None = None,
    raw_json: pl.Series | list[str] | None = None,
    mapping: SourceMapping | None = None,
    type_changes: list[str] | None = None,
    columns_found: list[str] | None = None,
) -> tuple[pl.DataFrame, SchemaReport]:
    """One input unit -> a raw frame in `raw_schema(model)` order, plus its schema report.

    `frame` holds the source's own columns. Offsets default to the row position (0-based); `raw_json`
    defaults to the row's own columns as JSON. A schema error becomes every row's read error. Every row is
    validated on its arrival day until `lib.routing` says otherwise.
    """
    n = len(offsets) if offsets is not None else frame.height
    conformed, report = conform(
        frame, model, uri=uri, mapping=mapping, type_changes=type_changes, height=n, columns_found=columns_found
    )
    if raw_json is None:
        raw_json = (
            frame.select(pl.struct(pl.all().cast(pl.String)).struct.json_encode()).to_series()
            if frame.width
            else pl.Series([None] * n, dtype=pl.String)
        )
    errors = pl.Series("_read_error", read_errors if read_errors is not None else [None] * n, dtype=pl.String)
    if report.error:
        errors = errors.fill_null(report.error)
    lineage = pl.DataFrame(
        {
            "partition_date": [partition_day] * n,
            "_source": [source] * n,
            "_source_uri": [uri] * n,
            "_source_offset": offsets if offsets is not None else list(range(n)),
            "_source_page": pages if pages is not None else [None] * n,
            "_ingested_at": [ingested_at] * n,
            "_arrival_date": [partition_day] * n,
            "_event_date": [partition_day] * n,
            "_routing": [None] * n,
            "_raw": raw_json,
            "_read_error": errors,
        },
        schema=RECORD_SCHEMA,
    )
    return pl.concat([lineage, conformed], how="horizontal").select(list(raw_schema(model))), report
