"""Delta Lake tables on shared storage (delta-rs, through `deltalake`): the warehouse of cluster mode.

One table per asset under a root folder (a volume every worker mounts). A run writes the slice of a table it owns,
its partitions, with one atomic commit that replaces exactly that slice (`overwrite` with a predicate), so workers on
different machines write different days of one table at once. Two writers of the same slice cannot both commit on
the snapshot they read: the loser gets `CommitFailedError` and writes again on the new snapshot, which replaces the
winner's slice instead of adding to it. Readers see the latest committed snapshot when they open a table and
never a half-written one.

DuckDB reads the tables as views over their snapshots (`attach`), so the SQL the assets run on the DuckDB file runs
unchanged on the lake; dbt gets a private DuckDB file holding copies of the tables it reads (`copy_into`), and its
models are published back to the lake (`publish`).
"""

from __future__ import annotations

import functools
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import polars as pl

# Commits a writer tries before it gives up on a slice that others keep changing under it.
ATTEMPTS = 8


@dataclass(frozen=True)
class Slice:
    """The rows of a table that one write replaces: `column` within [start, end) for a date range, `column` in
    `values` for named partitions, or the whole table when `column` is None."""

    column: str | None = None
    start: date | None = None
    end: date | None = None
    values: tuple[str, ...] = ()

    def predicate(self) -> str | None:
        """The slice as a delta-rs predicate (delta-rs takes no bound parameters: values are dates formatted here
        or string literals with their quotes doubled)."""
        if self.column is None:
            return None
        name = f'"{self.column}"'
        if self.start is not None and self.end is not None:
            return f"{name} >= '{self.start.isoformat()}' AND {name} < '{self.end.isoformat()}'"
        quoted = ", ".join("'" + value.replace("'", "''") + "'" for value in self.values)
        return f"{name} IN ({quoted})"

    def select(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The rows of `frame` within the slice."""
        if self.column is None:
            return frame
        column = pl.col(self.column)
        if self.start is not None and self.end is not None:
            return frame.filter((column >= self.start) & (column < self.end))
        return frame.filter(column.is_in(list(self.values)))


@dataclass(frozen=True)
class Written:
    version: int
    rows: int
    attempts: int


class SliceError(ValueError):
    """Rows outside the slice a write owns: writing them would replace another run's rows."""


def table_path(root: Path, name: str) -> Path:
    return root / name


def write(root: Path, name: str, frame: pl.DataFrame, where: Slice, *, attempts: int = ATTEMPTS) -> Written:
    """Replaces the slice `where` of table `name` with `frame` in one commit (the table is created on first write,
    partitioned by the slice's column), retrying when another writer committed first."""
    from deltalake import write_deltalake
    from deltalake.exceptions import CommitFailedError

    outside = frame.height - where.select(frame).height
    if outside:
        raise SliceError(f"{outside} of {frame.height} rows of {name} lie outside the slice {where.predicate()}")
    path = table_path(root, name)
    data = frame.to_arrow()
    for attempt in range(1, attempts + 1):
        predicate = where.predicate() if _exists(path) else None
        try:
            write_deltalake(
                str(path),
                data,
                mode="overwrite",
                predicate=predicate,
                partition_by=[where.column] if where.column else None,
                # A source may gain a column, or a column typed null on its first day may get a type later.
                schema_mode="merge",
            )
        except CommitFailedError:
            if attempt == attempts:
                raise
            time.sleep(random.uniform(0.05, 0.2) * attempt)
            continue
        return Written(version=_version(path), rows=frame.height, attempts=attempt)
    raise AssertionError("unreachable")


def read(root: Path, name: str, where: Slice | None = None) -> pl.DataFrame:
    """The rows of a slice of table `name` in its latest snapshot."""
    frame = pl.from_arrow(_dataset(table_path(root, name)).to_table())
    return where.select(frame) if where else frame


def tables(root: Path) -> list[str]:
    """The tables under `root` (a folder with a Delta log)."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if _exists(p))


def attach(conn: duckdb.DuckDBPyConnection, root: Path, names: Iterable[str] | None = None) -> list[str]:
    """Views `main.<table>` in `conn` over the latest snapshot of each table (all under `root` by default)."""
    attached = []
    for name in tables(root) if names is None else names:
        path = table_path(root, name)
        if _exists(path):
            conn.from_arrow(_dataset(path)).create_view(name, replace=True)
            attached.append(name)
    return attached


def copy_into(database: Path, root: Path, names: Iterable[str]) -> list[str]:
    """Tables `main.<name>` in the DuckDB file `database`, copies of the lake tables' latest snapshots (those that
    exist); for dbt, which runs in a process of its own."""
    copied = []
    with duckdb.connect(str(database)) as conn:
        for name in names:
            path = table_path(root, name)
            if _exists(path):
                snapshot = _dataset(path)  # noqa: F841  (read by name in the SQL below)
                conn.execute(f'create or replace table main."{name}" as select * from snapshot')
                copied.append(name)
    return copied


def publish(database: Path, root: Path, name: str, where: Slice) -> Written:
    """The slice `where` of `main.<name>` in the DuckDB file `database`, written to the lake table `name`."""
    with duckdb.connect(str(database), read_only=True) as conn:
        frame = conn.execute(f'select * from main."{name}"').pl()
    return write(root, name, where.select(frame), where)


def _exists(path: Path) -> bool:
    return _latest_version(path) is not None


def _latest_version(path: Path) -> int | None:
    """The newest commit in the table's log (a listing, without reading the log)."""
    try:
        names = os.listdir(path / "_delta_log")
    except FileNotFoundError:
        return None
    versions = [int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit()]
    return max(versions, default=None)


def _dataset(path: Path):
    """The latest snapshot of a table as a pyarrow dataset; loaded once per process and commit, since loading a
    snapshot replays the table's log, which every connection of a step would otherwise pay for every table."""
    return _snapshot(str(path), _latest_version(path))


@functools.lru_cache(maxsize=512)
def _snapshot(path: str, version: int):
    from deltalake import DeltaTable

    return DeltaTable(path, version=version).to_pyarrow_dataset()


def _version(path: Path) -> int:
    from deltalake import DeltaTable

    return DeltaTable(str(path)).version()
