"""The seams: every outside system an asset, check or sensor reaches is a Dagster resource defined here.

`embedded_resources(settings)` is the laptop default (files under the data root); `resources_from_env(settings)`
lays the environment over it (secrets stay `EnvVar`s, so the UI shows a variable's name, never its value). Tests
pass their own resources to `build_defs` instead of changing the environment.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import duckdb
import polars as pl
import polars.selectors as cs
from dagster_duckdb import DuckDBIOManager, DuckDBResource
from dagster_duckdb_polars import DuckDBPolarsTypeHandler
from pydantic import Field

from ai_pipeline.defs.dagster_internals import DbTypeHandler, TableSlice
from ai_pipeline.lib import lakehouse
from ai_pipeline.lib.feature_store.online_store import DEFAULT_TABLE as ONLINE_TABLE
from ai_pipeline.lib.feature_store.online_store import PostgresOnlineStore, SqliteOnlineStore
from ai_pipeline.lib.ingest import http_api, ops_db
from ai_pipeline.lib.llm import feedback
from ai_pipeline.lib.ops import alerts
from ai_pipeline.lib.rag import embedding, lexical, retrieval, vector_store
from ai_pipeline.settings import Settings, table_format

WAREHOUSE, IO_MANAGER = "warehouse", "io_manager"
# Resource keys, which are also the parameter names that assets, checks and sensors receive them by.
LANDING, OPS_DB, EVENTS_API = "landing_zone", "ops_database", "events_api"
ONLINE_STORE, VECTOR_STORE, EMBEDDER, ALERT_WEBHOOK = "online_store", "chroma", "embedder", "alert_webhook"
FEEDBACK = "feedback_store"
# Where steps hand values to the next step of the same asset (e.g. embedding shards): files under the data root.
STEP_IO = "step_io"
DEFAULT_SHARD_TEXTS = 512
DEFAULT_FEEDBACK_REBUILD_COUNT = 1000


class _CreatingPolarsTypeHandler(DuckDBPolarsTypeHandler):
    """Writes a frame into its table by column name: creates the table (also for an empty frame, so a source with
    nothing today still has a table) and adds the columns a newer version of the asset writes (schema evolution,
    as the lake's merge does); rows written before have NULL there."""

    def handle_output(self, context, table_slice: TableSlice, obj: pl.DataFrame, connection) -> None:
        frame = obj.to_arrow()  # noqa: F841  (read by name in the SQL below)
        table = f"{table_slice.schema}.{table_slice.table}"
        connection.execute(f"create schema if not exists {table_slice.schema}")
        connection.execute(f"create table if not exists {table} as select * from frame limit 0")
        present = {row[0] for row in connection.execute(f"describe {table}").fetchall()}
        for name, type_ in connection.execute("select column_name, column_type from (describe frame)").fetchall():
            if name not in present:
                connection.execute(f'alter table {table} add column "{name}" {type_}')
        connection.execute(f"insert into {table} by name select * from frame")
        columns = [dg.TableColumn(name=name, type=str(dtype)) for name, dtype in obj.schema.items()]
        context.add_output_metadata(
            {"row_count": obj.height, "dataframe_columns": dg.MetadataValue.table_schema(dg.TableSchema(columns))}
        )


class WarehouseIOManager(DuckDBIOManager):
    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [_CreatingPolarsTypeHandler()]

    @staticmethod
    def default_load_type() -> type:
        return pl.DataFrame


def window_slice(column: str, window: dg.TimeWindow) -> lakehouse.Slice:
    """The rows of a run's days: `column` within the time window of its partitions."""
    return lakehouse.Slice(column, start=window.start.date(), end=window.end.date())


def _slice(context: dg.OutputContext | dg.InputContext, metadata: Mapping[str, Any]) -> lakehouse.Slice:
    """The rows a partitioned asset's run owns: its partitions' values of the `partition_expr` column."""
    column = metadata.get("partition_expr")
    if column is None or not context.has_asset_partitions:
        return lakehouse.Slice()
    if isinstance(context.asset_partitions_def, dg.TimeWindowPartitionsDefinition):
        return window_slice(column, context.asset_partitions_time_window)
    return lakehouse.Slice(column, values=tuple(sorted(context.asset_partition_keys)))


class LakeIOManager(dg.ConfigurableIOManager):
    """Cluster mode's IO manager: each asset a Delta Lake table under `root`; a run replaces exactly its partitions
    (the rows of its `partition_expr` within the run's window) in one commit, retried when another writer committed
    first (`ai_pipeline/lib/lakehouse.py`)."""

    root: str = Field(description="The lake's folder, on storage every worker mounts.")

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame) -> None:
        name = context.asset_key.path[-1]
        written = lakehouse.write(Path(self.root), name, obj, _slice(context, context.definition_metadata or {}))
        context.add_output_metadata(
            {
                "dagster/row_count": written.rows,
                "table_version": written.version,
                "commit_attempts": written.attempts,
                "dagster/uri": str(Path(self.root) / name),
            }
        )

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        upstream = context.upstream_output
        metadata = (upstream.definition_metadata if upstream else None) or {}
        return lakehouse.read(Path(self.root), context.asset_key.path[-1], _slice(context, metadata))


class LakeWarehouse(DuckDBResource):
    """The warehouse of cluster mode: DuckDB over the lake. Each connection is a DuckDB in memory with a view
    `main.<table>` over the latest committed snapshot of every lake table, so the assets' SQL runs unchanged."""

    lake: str = Field(description="The lake's folder (the `LakeIOManager`'s root).")
    database: str = Field(default=":memory:", description="Unused: each connection is a DuckDB in memory.")

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        conn = duckdb.connect(":memory:")
        try:
            lakehouse.attach(conn, Path(self.lake))
            yield conn
        finally:
            conn.close()


class LandingZone(dg.ConfigurableResource):
    """The folder sources drop files into: `<root>/<source folder>/<YYYY-MM-DD>/`."""

    root: str = Field(description="The landing root directory.")
    settle_s: float = Field(
        default=30.0,
        description="How long every file of a day must stay unchanged before it is read (a `_SUCCESS` marker in "
        "the folder ends the wait).",
    )
    max_file_mb: float = Field(default=1024.0, description="The most one file may hold once decompressed.")

    @property
    def path(self) -> Path:
        return Path(self.root)

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * (1 << 20))


class OperationalDatabase(dg.ConfigurableResource):
    """The operational PostgreSQL table of user events; without a DSN the source contributes nothing."""

    dsn: str | None = Field(default=None, description="A libpq DSN (a secret: set AI_PIPELINE_OPS_DSN).")
    table: str = Field(default="public.user_events", description="The events table, schema-qualified.")

    def read_events(self, day, *, ingested_at):
        return ops_db.read_events(self.dsn, self.table, day, ingested_at=ingested_at)

    def rows_after(self, watermark: int | None) -> ops_db.NewRows:
        return ops_db.rows_after(self.dsn, self.table, watermark)


class EventsApi(dg.ConfigurableResource):
    """The HTTP events API; without a URL the source contributes nothing."""

    url: str | None = Field(default=None, description="The API's base URL.")
    token: str | None = Field(default=None, description="A bearer token (a secret: set AI_PIPELINE_API_TOKEN).")
    timeout_s: float = Field(default=10.0, description="Per request.")

    def fetch_events(self, day, *, ingested_at):
        return http_api.fetch_events(self.url, day, ingested_at=ingested_at, token=self.token, timeout_s=self.timeout_s)


class OnlineStore(dg.ConfigurableResource):
    """The online feature store: SQLite under the data root, or a PostgreSQL table."""

    backend: Literal["embedded", "postgres"] = "embedded"
    path: str = Field(default="", description="The SQLite file of the embedded store.")
    dsn: str | None = Field(default=None, description="A libpq DSN (a secret: set AI_PIPELINE_ONLINE_DSN).")
    table: str = Field(default=f"public.{ONLINE_TABLE}", description="The PostgreSQL table.")

    def client(self) -> PostgresOnlineStore | SqliteOnlineStore:
        if self.backend == "postgres":
            if not self.dsn:
                raise ValueError("AI_PIPELINE_ONLINE_STORE=postgres needs AI_PIPELINE_ONLINE_DSN (a libpq DSN)")
            return PostgresOnlineStore(self.dsn, self.table)
        return SqliteOnlineStore(Path(self.path))


class VectorStore(dg.ConfigurableResource):
    """The retrieval store: ChromaDB (a `chroma run` server when `url` is set, else an embedded store in `path`) for
    the vectors, a BM25 index per collection under `lexical_path`, and how questions search them."""

    path: str = Field(default="", description="The embedded store's directory.")
    url: str | None = Field(default=None, description="A Chroma server, e.g. http://127.0.0.1:8000.")
    lexical_path: str = Field(default="lexical", description="The BM25 indexes' folder (shared storage on a fleet).")
    search_mode: Literal[retrieval.MODES] = Field(
        default=retrieval.HYBRID, description="How `search` and the retrieval gate rank chunks (docs/rag.md)."
    )
    rrf_k: int = Field(default=60, description="Reciprocal-rank fusion's rank constant (hybrid).")
    dense_weight: float = Field(default=1.0, description="The dense ranking's weight in the fusion (hybrid).")
    lexical_weight: float = Field(default=1.0, description="The lexical ranking's weight in the fusion (hybrid).")

    @property
    def location(self) -> str:
        return self.url or self.path

    def collection(self, name: str, backend: str = embedding.DEFAULT_BACKEND, rebuild: bool = False) -> Any:
        """The collection of a document source, opened for this project's model on `backend` (others are refused,
        or with `rebuild` replaced by an empty collection)."""
        client = vector_store.open_client(url=self.url) if self.url else vector_store.open_client(path=Path(self.path))
        return vector_store.open_collection(
            client,
            name,
            model=embedding.MODEL_NAME,
            dimension=embedding.DIMENSION,
            backend=backend,
            rebuild=rebuild,
        )

    def lexical(self, name: str) -> lexical.LexicalIndex:
        return lexical.open_index(Path(self.lexical_path), name)

    def sync_lexical(self, name: str, entries: Sequence[lexical.LexicalEntry]) -> lexical.LexicalReport:
        return lexical.sync(Path(self.lexical_path), name, entries)

    def search_config(self, mode: str | None = None) -> retrieval.SearchConfig:
        return retrieval.SearchConfig(
            mode=mode or self.search_mode,
            rrf_k=self.rrf_k,
            dense_weight=self.dense_weight,
            lexical_weight=self.lexical_weight,
        )


@functools.cache
def _loaded_embedder(device: str, batch_size: int, backend: str, cache: str) -> embedding.Embedder:
    """One model per process and configuration: runs in one process share it."""
    return embedding.Embedder(device=device, batch_size=batch_size, backend=backend, cache=Path(cache))


class Embedder(dg.ConfigurableResource):
    """The embedding model (all-MiniLM-L6-v2, shipped offline) on one backend; loaded on first use, once per
    process."""

    backend: Literal[embedding.BACKENDS] = Field(
        default=embedding.DEFAULT_BACKEND,
        description="torch (sentence-transformers on PyTorch), onnx (ONNX Runtime, the same vectors) or onnx-int8 "
        "(int8 weights, ~2.7x torch on CPU); vectors record it, and a collection refuses another backend's.",
    )
    model_cache: str = Field(
        default=str(Path.home() / ".cache" / "ai_pipeline" / "models"),
        description="Where the ONNX backends keep their exported files (the embedded defaults: <data root>/models).",
    )
    device: str = Field(default="cpu", description="A torch device (the torch backend only).")
    batch_size: int = Field(default=64, description="Texts per forward pass (torch) or per progress report.")
    shard_texts: int = Field(
        default=DEFAULT_SHARD_TEXTS,
        description="Texts per embedding shard, a step of its own: a fleet embeds a collection's shards side by side.",
    )

    def _model(self) -> embedding.Embedder:
        return _loaded_embedder(self.device, self.batch_size, self.backend, self.model_cache)

    def embed(self, texts: Sequence[str], progress=None):
        return self._model().embed(texts, progress=progress)

    def embed_query(self, text: str):
        return self._model().embed_query(text)


class AlertWebhook(dg.ConfigurableResource):
    """Where failure alerts are posted as JSON; without a URL none are."""

    url: str | None = Field(default=None, description="The webhook (a secret: set AI_PIPELINE_ALERT_WEBHOOK_URL).")
    timeout_s: float = Field(default=10.0, description="Per delivery.")
    ui_url: str = Field(default="http://127.0.0.1:3000", description="The Dagster UI, for links in alerts.")

    def post(self, alert: alerts.Alert) -> None:
        alerts.post(self.url, alert, timeout_s=self.timeout_s)


class FeedbackStore(dg.ConfigurableResource):
    """Where the feedback service keeps ratings: a PostgreSQL table, or SQLite under the data root."""

    path: str = Field(default="", description="The SQLite file of the embedded store.")
    dsn: str | None = Field(default=None, description="A libpq DSN (a secret: set AI_PIPELINE_FEEDBACK_DSN).")
    table: str = Field(default="public.llm_feedback", description="The PostgreSQL table.")
    rebuild_count: int = Field(
        default=DEFAULT_FEEDBACK_REBUILD_COUNT,
        description="New feedback events that make the sensor rebuild the preference sets of the days they rate.",
    )

    def store(self) -> feedback.FeedbackStore:
        if self.dsn:
            return feedback.PostgresFeedbackStore(self.dsn, self.table)
        return feedback.SqliteFeedbackStore(Path(self.path))

    @property
    def location(self) -> str:
        return f"PostgreSQL table {self.table}" if self.dsn else self.path


def embedded_resources(settings: Settings) -> dict[str, Any]:
    """Everything on one machine, under the data root."""
    settings.warehouse.parent.mkdir(parents=True, exist_ok=True)
    database = str(settings.warehouse)
    return {
        IO_MANAGER: WarehouseIOManager(database=database, schema="main"),
        WAREHOUSE: DuckDBResource(database=database),
        LANDING: LandingZone(root=str(settings.landing)),
        OPS_DB: OperationalDatabase(),
        EVENTS_API: EventsApi(),
        ONLINE_STORE: OnlineStore(path=str(settings.online_features)),
        VECTOR_STORE: VectorStore(path=str(settings.chroma), lexical_path=str(settings.lexical)),
        EMBEDDER: Embedder(model_cache=str(settings.models)),
        ALERT_WEBHOOK: AlertWebhook(),
        FEEDBACK: FeedbackStore(path=str(settings.feedback)),
        STEP_IO: dg.FilesystemIOManager(base_dir=str(settings.home / "steps")),
    }


def resources_from_env(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The embedded defaults with every AI_PIPELINE_* setting of the environment applied (see the README); a field
    whose variable is not set keeps its resource's default."""
    env = os.environ if env is None else env

    def given(**fields: str | dg.EnvVar | float | None) -> dict[str, Any]:
        return {name: value for name, value in fields.items() if value is not None}

    def text(name: str) -> str | None:
        return env.get(name) or None

    def number(name: str) -> float | None:
        return float(env[name]) if env.get(name) else None

    def whole(name: str) -> int | None:
        return int(env[name]) if env.get(name) else None

    def secret(name: str) -> dg.EnvVar | None:
        return dg.EnvVar(name) if env.get(name) else None

    backend = text("AI_PIPELINE_ONLINE_STORE") or "embedded"
    if backend not in ("embedded", "postgres"):
        raise ValueError(f"AI_PIPELINE_ONLINE_STORE must be 'embedded' or 'postgres', not {backend!r}")
    if backend == "postgres" and not env.get("AI_PIPELINE_ONLINE_DSN"):
        raise ValueError("AI_PIPELINE_ONLINE_STORE=postgres needs AI_PIPELINE_ONLINE_DSN (a libpq DSN)")
    return {
        **embedded_resources(settings),
        **warehouse_from_env(settings, env),
        LANDING: LandingZone(
            root=str(settings.landing),
            **given(settle_s=number("AI_PIPELINE_LANDING_SETTLE_S"), max_file_mb=number("AI_PIPELINE_MAX_FILE_MB")),
        ),
        OPS_DB: OperationalDatabase(
            **given(dsn=secret("AI_PIPELINE_OPS_DSN"), table=text("AI_PIPELINE_OPS_TABLE")),
        ),
        EVENTS_API: EventsApi(
            **given(
                url=text("AI_PIPELINE_API_URL"),
                token=secret("AI_PIPELINE_API_TOKEN"),
                timeout_s=number("AI_PIPELINE_API_TIMEOUT_S"),
            )
        ),
        ONLINE_STORE: OnlineStore(
            backend=backend,
            path=str(settings.online_features),
            **given(dsn=secret("AI_PIPELINE_ONLINE_DSN"), table=text("AI_PIPELINE_ONLINE_TABLE")),
        ),
        VECTOR_STORE: VectorStore(
            path=str(settings.chroma),
            lexical_path=str(settings.lexical),
            **given(
                url=text("AI_PIPELINE_CHROMA_URL"),
                lexical_path=text("AI_PIPELINE_LEXICAL_ROOT"),
                search_mode=text("AI_PIPELINE_SEARCH_MODE"),
                rrf_k=whole("AI_PIPELINE_RRF_K"),
                dense_weight=number("AI_PIPELINE_DENSE_WEIGHT"),
                lexical_weight=number("AI_PIPELINE_LEXICAL_WEIGHT"),
            ),
        ),
        EMBEDDER: Embedder(
            model_cache=str(settings.models),
            **given(backend=text("AI_PIPELINE_EMBED_BACKEND"), shard_texts=whole("AI_PIPELINE_EMBED_SHARD_TEXTS")),
        ),
        ALERT_WEBHOOK: AlertWebhook(
            **given(
                url=secret("AI_PIPELINE_ALERT_WEBHOOK_URL"),
                timeout_s=number("AI_PIPELINE_ALERT_TIMEOUT_S"),
                ui_url=text("AI_PIPELINE_UI_URL"),
            )
        ),
        FEEDBACK: FeedbackStore(
            path=str(settings.feedback),
            **given(
                dsn=secret("AI_PIPELINE_FEEDBACK_DSN"),
                table=text("AI_PIPELINE_FEEDBACK_TABLE"),
                rebuild_count=whole("AI_PIPELINE_FEEDBACK_REBUILD_COUNT"),
            ),
        ),
    }


def warehouse_from_env(settings: Settings, env: Mapping[str, str]) -> dict[str, Any]:
    """The warehouse and IO manager of the table format `AI_PIPELINE_TABLE_FORMAT` names: `duckdb` (the default,
    one DuckDB file) or `delta` (Delta Lake tables under `AI_PIPELINE_LAKE_ROOT`, default `<data root>/lake`)."""
    if table_format(env) == "duckdb":
        return {}
    root = Path(env.get("AI_PIPELINE_LAKE_ROOT") or settings.lake).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return {IO_MANAGER: LakeIOManager(root=str(root)), WAREHOUSE: LakeWarehouse(lake=str(root))}


@contextmanager
def reading(warehouse: DuckDBResource) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection that reads the warehouse outside a run: the lake's views, or the DuckDB file opened read-only
    (`duckdb.IOException` while a run holds it for writing)."""
    if isinstance(warehouse, LakeWarehouse):
        with warehouse.get_connection() as conn:
            yield conn
    else:
        with duckdb.connect(warehouse.database, read_only=True) as conn:
            yield conn


def location(warehouse: DuckDBResource) -> str:
    """Where the warehouse's tables are, in words."""
    if isinstance(warehouse, LakeWarehouse):
        return f"{warehouse.lake}  (Delta Lake, one table per folder"
    return f"{warehouse.database}  (DuckDB"


def query(warehouse: DuckDBResource, sql: str, params: list) -> pl.DataFrame:
    """A query's result, timestamps in UTC (DuckDB names the zone after its session, e.g. Etc/UTC)."""
    with warehouse.get_connection() as conn:
        frame = conn.execute(sql, params).pl()
    return frame.with_columns(cs.datetime(time_zone="*").dt.convert_time_zone("UTC"))


def table_columns(warehouse: DuckDBResource, table: str) -> set[str]:
    """The columns of `main.<table>`, none before the IO manager has written it (an asset's first materialization)."""
    sql = "select column_name from information_schema.columns where table_schema = 'main' and table_name = ?"
    return set(query(warehouse, sql, [table])["column_name"].to_list())


def table_exists(warehouse: DuckDBResource, table: str) -> bool:
    return bool(table_columns(warehouse, table))
