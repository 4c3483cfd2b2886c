"""The online store: the newest feature vector of every user, for low-latency lookups by batches of user ids.

Two backends with one interface: `SqliteOnlineStore` (embedded, a file under the data root, no server) and
`PostgresOnlineStore` (a table in PostgreSQL). `publish` replaces the whole store with one feature date's rows
in one transaction, so readers see either the old or the new day, never a mix; a user absent from the newest
day (inactive for the whole horizon) is absent from the store. Column names come from the feature registry
and are quoted as identifiers; every value travels as a query parameter.
"""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from datetime import date
from pathlib import Path
from typing import Protocol

import polars as pl

from ai_pipeline.lib.feature_store.features import FEATURE_DATE, USER

DEFAULT_TABLE = "online_user_features"


class OnlineStore(Protocol):
    name: str

    def publish(self, features: pl.DataFrame) -> int: ...

    def lookup(self, user_ids: Sequence[str]) -> pl.DataFrame: ...

    def feature_date(self) -> date | None: ...

    def snapshot(self) -> pl.DataFrame: ...


def _single_date(features: pl.DataFrame) -> date:
    dates = features[FEATURE_DATE].unique()
    if dates.len() != 1:
        raise ValueError(f"an online store holds one feature date; got {dates.len()}: {dates.sort().to_list()}")
    return dates[0]


def _in_order(found: pl.DataFrame, user_ids: Sequence[str]) -> pl.DataFrame:
    """One row per requested id, in the request's order; unknown users are all nulls but the id."""
    wanted = pl.DataFrame({USER: list(user_ids)}, schema={USER: pl.String})
    return wanted.join(found, on=USER, how="left", maintain_order="left")


def _schema_json(schema: pl.Schema) -> str:
    return json.dumps({name: str(dtype) for name, dtype in schema.items()})


def _dtype(text: str) -> pl.DataType:
    if text.startswith("Datetime"):
        return pl.Datetime("us", "UTC")
    return {"String": pl.String(), "Date": pl.Date(), "Int64": pl.Int64(), "Float64": pl.Float64()}[text]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SqliteOnlineStore:
    """Embedded: one SQLite file in WAL mode (readers don't block the publisher). Timestamps are stored as
    microseconds since the epoch and dates as ISO text; the frame's schema is kept beside the table."""

    name = "embedded"

    def __init__(self, path: Path, table: str = DEFAULT_TABLE):
        self.path, self.table = Path(path), table

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        connection.execute("pragma journal_mode=wal")
        return connection

    def publish(self, features: pl.DataFrame) -> int:
        _single_date(features)
        encoded = features.with_columns(
            [pl.col(c).dt.epoch("us") for c, t in features.schema.items() if isinstance(t, pl.Datetime)]
            + [pl.col(c).cast(pl.String) for c, t in features.schema.items() if t == pl.Date]
        )
        columns = ", ".join(_quote(c) for c in features.columns)
        marks = ", ".join("?" for _ in features.columns)
        table = _quote(self.table)
        with closing(self._connect()) as db:
            db.execute("begin immediate")
            try:
                db.execute(f"drop table if exists {table}")
                db.execute(f"create table {table} ({columns}, primary key ({_quote(USER)})) without rowid")
                db.executemany(f"insert into {table} ({columns}) values ({marks})", encoded.iter_rows())
                db.execute("create table if not exists _schemas (name text primary key, schema text)")
                db.execute("insert or replace into _schemas values (?, ?)", (self.table, _schema_json(features.schema)))
                db.execute("commit")
            except BaseException:
                db.execute("rollback")
                raise
        return features.height

    def _schema(self, db: sqlite3.Connection) -> dict[str, pl.DataType] | None:
        try:
            row = db.execute("select schema from _schemas where name = ?", (self.table,)).fetchone()
        except sqlite3.OperationalError:
            return None
        return {name: _dtype(text) for name, text in json.loads(row[0]).items()} if row else None

    def _frame(self, db: sqlite3.Connection, where: str = "", params: Sequence = ()) -> pl.DataFrame:
        schema = self._schema(db)
        if schema is None:
            return pl.DataFrame(schema={USER: pl.String, FEATURE_DATE: pl.Date})
        columns = ", ".join(_quote(c) for c in schema)
        rows = db.execute(f"select {columns} from {_quote(self.table)} {where}", params).fetchall()
        stored = {
            c: pl.Int64 if isinstance(t, pl.Datetime) else pl.String if t == pl.Date else t for c, t in schema.items()
        }
        frame = pl.DataFrame(rows, schema=stored, orient="row")
        return frame.with_columns(
            [
                pl.from_epoch(c, "us").dt.replace_time_zone("UTC")
                for c, t in schema.items()
                if isinstance(t, pl.Datetime)
            ]
            + [pl.col(c).str.to_date() for c, t in schema.items() if t == pl.Date]
        )

    def lookup(self, user_ids: Sequence[str]) -> pl.DataFrame:
        ids = list(dict.fromkeys(user_ids))
        with closing(self._connect()) as db:
            found = self._frame(db, f"where {_quote(USER)} in ({', '.join('?' for _ in ids)})", ids)
        return _in_order(found, user_ids)

    def feature_date(self) -> date | None:
        with closing(self._connect()) as db:
            frame = self._frame(db, "limit 1")
        return frame[FEATURE_DATE][0] if frame.height else None

    def snapshot(self) -> pl.DataFrame:
        with closing(self._connect()) as db:
            return self._frame(db).sort(USER)


_PG_TYPES = {pl.String: "text", pl.Date: "date", pl.Int64: "bigint", pl.Float64: "double precision"}


def _pg_type(dtype: pl.DataType) -> str:
    return "timestamptz" if isinstance(dtype, pl.Datetime) else _PG_TYPES[dtype.base_type()]


class PostgresOnlineStore:
    """A table in PostgreSQL (connection from a libpq DSN, taken from the environment by the caller)."""

    name = "postgres"

    def __init__(self, dsn: str, table: str = f"public.{DEFAULT_TABLE}"):
        self.dsn = dsn
        self.schema_name, _, self.table = table.rpartition(".")
        self.schema_name = self.schema_name or "public"
        self._connection = None

    def _connect(self):
        import psycopg2

        if self._connection is None or self._connection.closed:
            self._connection = psycopg2.connect(self.dsn)
            with self._connection, self._connection.cursor() as cursor:
                cursor.execute("set time zone 'UTC'")
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()

    def _identifier(self):
        from psycopg2 import sql

        return sql.Identifier(self.schema_name, self.table)

    def publish(self, features: pl.DataFrame) -> int:
        """Loads with COPY (CSV, nulls as \\N so an empty string stays a string), ~20x faster than INSERTs."""
        from psycopg2 import sql

        _single_date(features)
        table = self._identifier()
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_pg_type(t))) for c, t in features.schema.items()
        )
        names = sql.SQL(", ").join(sql.Identifier(c) for c in features.columns)
        connection = self._connect()
        with connection, connection.cursor() as cursor:  # one transaction: commit on success, else rollback
            cursor.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(self.schema_name)))
            cursor.execute(sql.SQL("drop table if exists {}").format(table))
            cursor.execute(
                sql.SQL("create table {} ({}, primary key ({}))").format(table, columns, sql.Identifier(USER))
            )
            data = io.BytesIO()
            features.write_csv(data, include_header=False, null_value=r"\N", datetime_format="%Y-%m-%dT%H:%M:%S%.6f%:z")
            data.seek(0)
            copy = sql.SQL("copy {} ({}) from stdin with (format csv, null '\\N')").format(table, names)
            cursor.copy_expert(copy.as_string(cursor), data)
        return features.height

    def _frame(self, where=None, params: Sequence = ()) -> pl.DataFrame:
        from psycopg2 import errors, sql

        connection = self._connect()
        query = sql.SQL("select * from {}").format(self._identifier())
        if where is not None:
            query = sql.SQL(" ").join([query, where])
        with connection, connection.cursor() as cursor:
            try:
                cursor.execute(query, params)
            except errors.UndefinedTable:
                return pl.DataFrame(schema={USER: pl.String, FEATURE_DATE: pl.Date})
            names = [d.name for d in cursor.description]
            types = {d.name: d.type_code for d in cursor.description}
            rows = cursor.fetchall()
        schema = {name: _PG_DTYPE.get(types[name], pl.String) for name in names}
        return pl.DataFrame(rows, schema=schema, orient="row")

    def lookup(self, user_ids: Sequence[str]) -> pl.DataFrame:
        from psycopg2 import sql

        found = self._frame(sql.SQL("where {} = any(%s)").format(sql.Identifier(USER)), (list(user_ids),))
        return _in_order(found, user_ids)

    def feature_date(self) -> date | None:
        from psycopg2 import sql

        frame = self._frame(sql.SQL("limit 1"))
        return frame[FEATURE_DATE][0] if frame.height else None

    def snapshot(self) -> pl.DataFrame:
        return self._frame().sort(USER)


# PostgreSQL type oids -> Polars types.
_PG_DTYPE = {25: pl.String, 1082: pl.Date, 20: pl.Int64, 701: pl.Float64, 1184: pl.Datetime("us", "UTC")}
