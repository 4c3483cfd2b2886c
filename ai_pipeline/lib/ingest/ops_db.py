"""The operational PostgreSQL table of user events, read one partition day at a time into the raw layer.

`read_events` discovers the table's columns (so renamed, extra or missing columns reach the schema report like
any other source's), selects the rows whose event time lies in `[day 00:00 UTC, day+1 00:00 UTC)` with
parameterized SQL only (identifiers composed with `psycopg2.sql.Identifier`, values passed as `%s`
parameters), ordered by the table's primary key, and converts every value to a string faithfully:

- timestamptz -> ISO 8601 in UTC with `Z` (`2024-01-05T10:00:00Z`, microseconds when present);
  timestamp without time zone -> ISO 8601 without offset (the contract reads it as UTC); date -> ISO date;
- numeric -> a plain decimal string without exponent, as stored (`12.50` stays `12.50`);
  numeric/float NaN and infinities -> `nan`, `inf`, `-inf` (validation later rejects them);
- float -> shortest round-trip digits without exponent; integers as integers; boolean -> `true`/`false`;
- json/jsonb/arrays -> JSON text; NULL -> None; anything else -> `str(value)`.

Lineage: `source="operational_db"`, `uri=postgresql://host:port/dbname/schema.table` (never user or
password), `offsets` = the integer primary key of each row, `raw_json` = the whole row (primary key included)
as JSON with the converted values.

The table name is `schema.table` or `table` (schema `public`). The surrogate primary key is lineage, not
data: it is left out of the contract columns when another column already supplies the contract field it
would alias (a bigserial `id` next to `event_id`); a table whose primary key is the only event id keeps it.

Rows whose event time is NULL belong to no day and are never read; the schema error of a table that lacks
a required column is carried by every row read (nothing is dropped).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import psycopg2
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from ai_pipeline.lib.ingest.contracts import Event, field_aliases
from ai_pipeline.lib.ingest.raw import SchemaReport, SourceMapping, text_value, to_raw

SOURCE = "operational_db"
DEFAULT_CONNECT_TIMEOUT_S = 10
FETCH_BATCH = 5000

_INTEGER_TYPES = {"smallint", "integer", "bigint"}
_TIME_TYPES = {"timestamp with time zone", "timestamp without time zone", "date"}


class OpsDbError(RuntimeError):
    """The operational table cannot be read as an event source (missing table, no time column, no key)."""


# --------------------------------------------------------------------------------------------- connections


@contextmanager
def _connect(dsn: str, *, readonly: bool = False) -> Iterator[psycopg2.extensions.connection]:
    params = psycopg2.extensions.parse_dsn(dsn)
    extra = {} if "connect_timeout" in params else {"connect_timeout": DEFAULT_CONNECT_TIMEOUT_S}
    conn = psycopg2.connect(dsn, **extra)
    try:
        conn.set_session(readonly=readonly)
        with conn.cursor() as cur:
            # Windows are computed in UTC; `timestamp without time zone` columns are read as UTC too.
            cur.execute("SET TIME ZONE 'UTC'")
        yield conn
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()


def split_table_name(table: str) -> tuple[str, str]:
    """`schema.table` -> (schema, table); a bare name is in `public`."""
    schema, _, name = table.rpartition(".")
    if not name:
        raise ValueError(f"empty table name in {table!r}")
    return (schema or "public"), name


def _table_identifier(table: str) -> sql.Composed:
    schema, name = split_table_name(table)
    return sql.SQL(".").join([sql.Identifier(schema), sql.Identifier(name)])


def _uri(conn: psycopg2.extensions.connection, table: str) -> str:
    """postgresql://host:port/dbname/schema.table -- no user, no password."""
    info = conn.info
    host = info.host or "localhost"
    if ":" in host and not host.startswith("/"):
        host = f"[{host}]"
    schema, name = split_table_name(table)
    return f"postgresql://{host}:{info.port}/{info.dbname}/{schema}.{name}"


def table_uri(dsn: str, table: str) -> str:
    """The table's lineage URI (`_uri`): where its rows came from, without credentials."""
    with _connect(dsn, readonly=True) as conn:
        return _uri(conn, table)


def _columns(cur: psycopg2.extensions.cursor, table: str) -> list[tuple[str, str]]:
    """(column name, data type) in table order."""
    schema, name = split_table_name(table)
    cur.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (schema, name),
    )
    columns = [(str(c), str(t)) for c, t in cur.fetchall()]
    if not columns:
        raise OpsDbError(f"table {schema}.{name} does not exist (or has no columns visible to this role)")
    return columns


def _primary_key(cur: psycopg2.extensions.cursor, table: str) -> list[str]:
    schema, name = split_table_name(table)
    cur.execute(
        "SELECT a.attname FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true"
        " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum"
        " WHERE i.indisprimary AND n.nspname = %s AND c.relname = %s ORDER BY k.ord",
        (schema, name),
    )
    return [str(r[0]) for r in cur.fetchall()]


# ------------------------------------------------------------------------------------------------- reading


def _time_column(columns: list[str], table: str) -> str:
    """The first column (in table order, as `conform` would pick it) that the contract accepts as event_time."""
    aliases = field_aliases(Event)
    for column in columns:
        if aliases.get(column) == "event_time":
            return column
    accepted = sorted(name for name, canonical in aliases.items() if canonical == "event_time")
    raise OpsDbError(f"table {table} has no event time column: expected one of {accepted}, found columns {columns}")


def _typed_time_column(typed: list[tuple[str, str]], table: str) -> str:
    """The event time column, which must be a timestamp or a date for day windows to mean anything."""
    types = dict(typed)
    column = _time_column([c for c, _ in typed], table)
    if types[column] not in _TIME_TYPES:
        raise OpsDbError(
            f"event time column {column!r} of table {table} has type {types[column]!r};"
            f" expected one of {sorted(_TIME_TYPES)}"
        )
    return column


def _data_columns(columns: list[str], key: list[str]) -> list[str]:
    """The columns handed to the contract: a surrogate key is dropped if another column supplies its field."""
    aliases = field_aliases(Event)
    out = []
    for column in columns:
        target = aliases.get(column)
        if column in key and target is not None:
            if any(aliases.get(other) == target for other in columns if other != column):
                continue
        out.append(column)
    return out


def read_events(
    dsn: str,
    table: str,
    day: date,
    *,
    ingested_at: datetime,
    mapping: SourceMapping | None = None,
) -> tuple[pl.DataFrame, SchemaReport]:
    """The rows of `table` whose event time is in the partition day (UTC) -> (raw frame, schema report)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    with _connect(dsn, readonly=True) as conn:
        uri = _uri(conn, table)
        with conn.cursor() as cur:
            typed = _columns(cur, table)
            key = _primary_key(cur, table)
        names = [c for c, _ in typed]
        types = dict(typed)
        time_column = _typed_time_column(typed, table)
        if not key:
            raise OpsDbError(f"table {table} has no primary key to order and locate rows by; columns {names}")
        integer_key = len(key) == 1 and types[key[0]] in _INTEGER_TYPES
        query = sql.SQL("SELECT {cols} FROM {table} WHERE {t} >= %s AND {t} < %s ORDER BY {key}").format(
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in names),
            table=_table_identifier(table),
            t=sql.Identifier(time_column),
            key=sql.SQL(", ").join(sql.Identifier(c) for c in key),
        )
        values: dict[str, list[str | None]] = {c: [] for c in names}
        offsets: list[int] = []
        raws: list[str] = []
        errors: list[str | None] = []
        # A server-side cursor keeps memory flat on a large day.
        with conn.cursor(name="ai_pipeline_read_events") as cur:
            cur.itersize = FETCH_BATCH
            cur.execute(query, (start, end))
            for position, row in enumerate(cur):
                error = None
                texts: list[str | None] = []
                for column, value in zip(names, row, strict=True):
                    try:
                        texts.append(text_value(value))
                    except Exception as exc:  # a value that cannot be rendered is this row's read error
                        texts.append(None)
                        error = f"column {column!r}: cannot convert {type(value).__name__} to text: {exc}"
                for column, text in zip(names, texts, strict=True):
                    values[column].append(text)
                offsets.append(int(row[names.index(key[0])]) if integer_key else position)
                raws.append(json.dumps(dict(zip(names, texts, strict=True)), ensure_ascii=False))
                errors.append(error)
    data = _data_columns(names, key)
    frame = pl.DataFrame({c: values[c] for c in data}, schema={c: pl.String for c in data})
    return to_raw(
        frame,
        Event,
        partition_day=day,
        source=SOURCE,
        uri=uri,
        ingested_at=ingested_at,
        offsets=offsets,
        read_errors=errors,
        raw_json=raws,
        mapping=mapping,
    )


# ----------------------------------------------------------------------------------- table helpers (tests,
# sample data)


def create_events_table(dsn: str, table: str) -> None:
    """Create (if absent) the operational events table, its schema, and an index on event_time."""
    schema, name = split_table_name(table)
    with _connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " id bigserial PRIMARY KEY,"
                " event_id text, user_id text, event_type text, event_time timestamptz,"
                " amount numeric, category text, country text)"
            ).format(_table_identifier(table))
        )
        cur.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (event_time)").format(
                sql.Identifier(f"{name[:48]}_event_time_idx"), _table_identifier(table)
            )
        )


def insert_events(dsn: str, table: str, rows: Iterable[Mapping[str, Any]], *, page_size: int = 1000) -> int:
    """Insert rows (dicts of column -> value; the columns are the union of the keys) and return the count."""
    rows = list(rows)
    if not rows:
        return 0
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    query = sql.SQL("INSERT INTO {} ({}) VALUES %s").format(
        _table_identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    with _connect(dsn) as conn, conn.cursor() as cur:
        psycopg2.extras.execute_values(
            cur, query, [tuple(row.get(c) for c in columns) for row in rows], page_size=page_size
        )
    return len(rows)


def _integer_key(cur: psycopg2.extensions.cursor, table: str) -> str:
    """The single integer primary key column: what a watermark can be kept on."""
    typed = _columns(cur, table)
    key = _primary_key(cur, table)
    if len(key) != 1 or dict(typed)[key[0]] not in _INTEGER_TYPES:
        raise OpsDbError(f"table {table} has no single integer primary key (key {key}); columns {typed}")
    return key[0]


def max_id(dsn: str, table: str) -> int | None:
    """The largest primary key value (a watermark for a sensor); None for an empty table."""
    with _connect(dsn, readonly=True) as conn, conn.cursor() as cur:
        key = _integer_key(cur, table)
        cur.execute(sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(key), _table_identifier(table)))
        value = cur.fetchone()[0]
    return None if value is None else int(value)


@dataclass(frozen=True)
class NewRows:
    """The rows whose primary key lies beyond a watermark."""

    watermark: int | None  # the largest key among them; the old watermark when there are none
    rows: int
    days: list[date]  # the distinct UTC days of their event times (a row without one belongs to no day)


def rows_after(dsn: str, table: str, watermark: int | None) -> NewRows:
    """What was added beyond `watermark` (the largest integer primary key already seen; None: nothing seen).

    Keys are assigned at insert, not at commit: a transaction that commits after a later one can land behind
    the watermark; its day is read again when the day's partition next runs.
    """
    with _connect(dsn, readonly=True) as conn, conn.cursor() as cur:
        key = _integer_key(cur, table)
        time_column = _typed_time_column(_columns(cur, table), table)
        beyond = sql.SQL("WHERE {} > %s").format(sql.Identifier(key)) if watermark is not None else sql.SQL("")
        # The session time zone is UTC (`_connect`): `::date` is the UTC day of a timestamptz.
        cur.execute(
            sql.SQL(
                "SELECT max({key}), count(*), array_agg(DISTINCT {t}::date) FILTER (WHERE {t} IS NOT NULL)"
                " FROM {table} {beyond}"
            ).format(
                key=sql.Identifier(key), t=sql.Identifier(time_column), table=_table_identifier(table), beyond=beyond
            ),
            () if watermark is None else (watermark,),
        )
        top, rows, days = cur.fetchone()
    return NewRows(watermark if top is None else int(top), int(rows), sorted(days or []))
