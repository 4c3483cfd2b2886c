"""Documents -> chunks -> embeddings -> a ChromaDB collection, one partition per document source.

Assets: `raw_documents`, `document_chunks`, `chunk_embeddings`, `vector_collection`. The work is done by
`ai_pipeline.lib.rag.documents`, `lib.chunking`, `lib.embedding`, `lib.vector_store` and `lib.retrieval`; these shells
read the warehouse, call them, and report numbers. Partitions are dynamic: one key per configured document source
(`Settings.doc_sources`), added by `register_collections` (the demo) or the document sensor (`sensors.py`).
"""

import time
from datetime import timedelta

import dagster as dg
import numpy as np
import polars as pl
from dagster_duckdb import DuckDBResource

from ai_pipeline.defs.execution import heavy_step
from ai_pipeline.defs.keys import (
    CHUNK_EMBEDDINGS,
    COVERAGE_CHECK,
    DOCUMENT_CHUNKS,
    DUCKDB_POOL,
    EMBED_SHARD,
    LOADED_CHECK,
    PLAN_EMBEDDINGS,
    RAG_GROUP,
    RAW_DOCUMENTS,
    TOKENS_CHECK,
    VECTOR_COLLECTION,
    WRITE_EMBEDDINGS,
)
from ai_pipeline.defs.policy import OWNERS
from ai_pipeline.defs.reporting import check_result
from ai_pipeline.defs.resources import STEP_IO, Embedder, VectorStore, query, table_columns
from ai_pipeline.event_log import latest_materialization
from ai_pipeline.lib.quality import Verdict
from ai_pipeline.lib.rag import chunking, documents, embedding, retrieval
from ai_pipeline.lib.rag.lexical import LexicalEntry
from ai_pipeline.lib.rag.vector_store import LEGACY_BACKEND, ModelMismatch, VectorRecord, sync_collection
from ai_pipeline.settings import DocSource, Settings

COLLECTIONS = dg.DynamicPartitionsDefinition(name="document_collections")


COLLECTION_PARTITION_EXPR = {"partition_expr": "collection"}
# raw_documents' metadata: the fingerprint of the source's files as loaded (`documents.fingerprint`).
SOURCE_STATE = "source_state"
VECTOR_SCHEMA = {"content_hash": pl.String, "embedding": pl.Array(pl.Float32, embedding.DIMENSION)}
# The output of `write_embeddings` that carries the coverage check (graph assets name a check's output so).
COVERAGE_OUTPUT = f"{CHUNK_EMBEDDINGS}_{COVERAGE_CHECK}"


# A document collection is rebuilt when its sources change, not on a clock: stale after a week, failed after two.
DOCS_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(days=14), warn_window=timedelta(days=7))


def register_collections(instance: dg.DagsterInstance, settings: Settings) -> list[str]:
    """Adds a partition for every configured source that has none yet; returns the new keys."""
    existing = set(instance.get_dynamic_partitions(COLLECTIONS.name))
    new = [s.name for s in settings.doc_sources if s.name not in existing]
    if new:
        instance.add_dynamic_partitions(COLLECTIONS.name, new)
    return new


def built_state(instance: dg.DagsterInstance, collection: str) -> str | None:
    """The fingerprint of the source files that the collection was last built from: the `raw_documents` that its
    last `vector_collection` materialization came after (None when that sync has not happened since)."""
    raw, synced = (latest_materialization(instance, key, collection) for key in (RAW_DOCUMENTS, VECTOR_COLLECTION))
    if raw is None or synced is None or synced.storage_id < raw.storage_id:
        return None
    value = raw.asset_materialization.metadata.get(SOURCE_STATE)
    return value.value if value is not None else None


def load_source(source: DocSource) -> tuple[list[documents.Document], list[documents.Skipped]]:
    """The source's documents and skipped files (its golden question set is not a skipped document)."""
    docs, skipped = documents.load_documents(source.root, source.name, include=source.include)
    root = source.root.resolve()
    golden = source.golden.resolve() if source.golden else None
    relative = golden.relative_to(root).as_posix() if golden and golden.is_relative_to(root) else None
    return docs, [s for s in skipped if s.path != relative]


def collection_check_spec(name: str, asset: str, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=asset, partitions_def=COLLECTIONS, description=description, blocking=blocking)


_COMMON = dict(
    group_name=RAG_GROUP,
    owners=OWNERS,
    partitions_def=COLLECTIONS,
    freshness_policy=DOCS_FRESHNESS,
)


def rag_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    @dg.asset(
        name=RAW_DOCUMENTS,
        description="Documents (Markdown, text, HTML) of one configured source: stable id from the path within "
        "the source, content hash, title, updated time. Never follows links or leaves the source root; binary, "
        "undecodable and oversize files are reported, not loaded.",
        kinds={"python", "duckdb"},
        pool=DUCKDB_POOL,
        metadata=COLLECTION_PARTITION_EXPR,
        check_specs=[
            collection_check_spec(
                LOADED_CHECK, RAW_DOCUMENTS, "Every file under the source root is loaded or reported with a reason."
            )
        ],
        **_COMMON,
    )
    def raw_documents(context: dg.AssetExecutionContext):
        source = settings.doc_source(context.partition_key)
        state = documents.fingerprint(source.root, source.include)  # before loading: a later change is new
        docs, skipped = load_source(source)
        frame = documents.documents_frame(docs).with_columns(pl.lit(source.name).alias("collection"))
        yield dg.Output(
            frame,
            metadata={
                "dagster/row_count": frame.height,
                "bytes": int(frame["size"].sum() or 0),
                "skipped": len(skipped),
                "root": str(source.root),
                SOURCE_STATE: state,
            },
        )
        reasons = {s.path: s.reason for s in skipped}
        verdict = Verdict(
            not skipped,
            "WARN",
            f"{len(docs)} documents loaded, {len(skipped)} files skipped" + (f": {reasons}" if skipped else ""),
        )
        yield check_result(
            verdict, {"skipped": dg.MetadataValue.json(reasons)}, check_name=LOADED_CHECK, asset_key=RAW_DOCUMENTS
        )

    @dg.asset(
        name=DOCUMENT_CHUNKS,
        description="Structure-aware chunks: split on Markdown headings, code blocks and tables kept whole where "
        f"they fit, sized in the embedding model's own tokens (at most {chunking.MAX_TOKENS}), with the heading "
        "path; ids from document id and chunk content.",
        kinds={"python", "duckdb"},
        pool=DUCKDB_POOL,
        deps=[RAW_DOCUMENTS],
        metadata=COLLECTION_PARTITION_EXPR,
        check_specs=[
            collection_check_spec(
                TOKENS_CHECK,
                DOCUMENT_CHUNKS,
                f"Every chunk has at most {chunking.MAX_TOKENS} tokens and a unique id.",
                True,
            )
        ],
        **_COMMON,
    )
    def document_chunks(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
        raw = query(
            warehouse,
            f"select * from main.{RAW_DOCUMENTS} where collection = ? order by doc_id",
            [context.partition_key],
        )
        counter = chunking.TokenCounter()
        started = time.perf_counter()
        chunks = [c for doc in _documents(raw) for c in chunking.chunk_document(doc, counter)]
        frame = chunking.chunks_frame(chunks).with_columns(pl.lit(context.partition_key).alias("collection"))
        tokens = frame["tokens"] if frame.height else pl.Series([0])
        yield dg.Output(
            frame,
            metadata={
                "dagster/row_count": frame.height,
                "documents": raw.height,
                "max_tokens": int(tokens.max()),
                "mean_tokens": round(float(tokens.mean()), 1),
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        over = int((tokens > chunking.MAX_TOKENS).sum())
        duplicates = frame.height - frame["chunk_id"].n_unique() if frame.height else 0
        verdict = Verdict(
            over == 0 and duplicates == 0,
            "ERROR",
            f"{frame.height} chunks, {over} over {chunking.MAX_TOKENS} tokens, {duplicates} duplicate ids",
        )
        yield check_result(
            verdict,
            {"over_limit": over, "duplicate_ids": duplicates},
            check_name=TOKENS_CHECK,
            asset_key=DOCUMENT_CHUNKS,
        )

    @dg.op(
        name=PLAN_EMBEDDINGS,
        ins={"chunks": dg.In(dg.Nothing)},
        out={"plan": dg.Out(io_manager_key=STEP_IO), "shards": dg.DynamicOut(io_manager_key=STEP_IO)},
        pool=DUCKDB_POOL,
    )
    def plan_embeddings(context: dg.OpExecutionContext, warehouse: DuckDBResource, embedder: Embedder):
        """The collection's chunks with the vectors the content-hash cache holds, and the texts still to embed in
        shards of `embedder.shard_texts` (at least one, maybe empty, so that the write step always runs)."""
        collection = context.partition_key
        chunks = query(
            warehouse,
            f"select chunk_id, content_hash, text from main.{DOCUMENT_CHUNKS} where collection = ? order by chunk_id",
            [collection],
        )
        hashes = chunks["content_hash"].unique().to_list()
        cached = _cached_vectors(warehouse, embedding.MODEL_NAME, embedder.backend, hashes)
        todo = chunks.filter(~pl.col("content_hash").is_in(cached["content_hash"].implode())).unique(
            "content_hash", keep="first", maintain_order=True
        )
        yield dg.Output((chunks.select("chunk_id", "content_hash"), cached), output_name="plan")
        shards = embedding.shard_texts(todo["text"].to_list(), embedder.shard_texts) or [[]]
        for number, rows in enumerate(shards):
            shard = todo[rows].select("content_hash", "text")
            yield dg.DynamicOutput(shard, output_name="shards", mapping_key=f"shard_{number}")

    @dg.op(name=EMBED_SHARD, out=dg.Out(io_manager_key=STEP_IO), tags=heavy_step("embedding"))
    def embed_shard(context: dg.OpExecutionContext, embedder: Embedder, shard: pl.DataFrame):
        """One shard's vectors; shards run side by side wherever the executor puts them (Celery workers)."""
        started = time.perf_counter()
        fresh = pl.DataFrame(schema=VECTOR_SCHEMA)
        if shard.height:

            def progress(done: int, total: int) -> None:
                context.log.info(f"embedded {done}/{total} chunks of shard {context.get_mapping_key()}")

            vectors = embedder.embed(shard["text"].to_list(), progress=progress)
            fresh = pl.DataFrame({"content_hash": shard["content_hash"], "embedding": vectors}, schema=VECTOR_SCHEMA)
        seconds = time.perf_counter() - started
        return dg.Output(
            fresh,
            metadata={
                "texts": shard.height,
                "embed_seconds": round(seconds, 3),
                "texts_per_second": round(shard.height / seconds, 1) if shard.height and seconds else 0.0,
            },
        )

    @dg.op(
        name=WRITE_EMBEDDINGS,
        out={"result": dg.Out(), COVERAGE_OUTPUT: dg.Out(dg.Nothing, is_required=False)},
        pool=DUCKDB_POOL,
    )
    def write_embeddings(context: dg.OpExecutionContext, embedder: Embedder, plan: tuple, shards: list[pl.DataFrame]):
        """Every chunk with its vector, cached or fresh, as the table `chunk_embeddings`."""
        chunks, cached = plan
        fresh = pl.concat(shards, how="vertical")
        frame = chunks.join(pl.concat([cached, fresh], how="vertical"), on="content_hash", how="left").with_columns(
            pl.lit(embedding.MODEL_NAME).alias("model"),
            pl.lit(context.partition_key).alias("collection"),
            pl.lit(embedder.backend).alias("backend"),
        )
        yield dg.Output(
            frame,
            output_name="result",
            metadata={
                "dagster/row_count": frame.height,
                "embedded": fresh.height,
                "reused": frame.height - fresh.height,
                "shards": len(shards),
                "model": embedding.MODEL_NAME,
                "backend": embedder.backend,
            },
        )
        missing = int(frame["embedding"].is_null().sum())
        verdict = Verdict(missing == 0, "ERROR", f"{frame.height - missing} of {frame.height} chunks have a vector")
        yield check_result(verdict, {"missing": missing}, check_name=COVERAGE_CHECK, asset_key=CHUNK_EMBEDDINGS)

    @dg.graph_asset(
        name=CHUNK_EMBEDDINGS,
        description=f"One {embedding.DIMENSION}-dimensional, normalized {embedding.MODEL_NAME} vector per chunk, "
        "on the embedder's backend (torch, onnx or onnx-int8). Content-addressed: a chunk whose text was embedded "
        "before by the same model and backend (in any collection) reuses "
        "that vector; only new text is embedded, in shards (`AI_PIPELINE_EMBED_SHARD_TEXTS` texts each) that run "
        "as steps of their own, side by side on a fleet.",
        kinds={"python", "pytorch", "duckdb"},
        ins={"chunks": dg.AssetIn(DOCUMENT_CHUNKS, dagster_type=dg.Nothing)},
        metadata=COLLECTION_PARTITION_EXPR,
        check_specs=[
            collection_check_spec(
                COVERAGE_CHECK, CHUNK_EMBEDDINGS, "Every chunk has exactly one vector of the model.", True
            )
        ],
        group_name=RAG_GROUP,
        owners=OWNERS,
        partitions_def=COLLECTIONS,
    )
    def chunk_embeddings(chunks):
        plan, shards = plan_embeddings(chunks)
        result, coverage = write_embeddings(plan, shards.map(embed_shard).collect())
        return {"result": result, COVERAGE_OUTPUT: coverage}

    @dg.asset(
        name=VECTOR_COLLECTION,
        description="The ChromaDB collection (cosine space) of one source, kept in exact sync with its chunks: new "
        "chunks added, moved ones updated, those of changed or deleted documents removed; a run with nothing "
        "changed writes nothing. Each vector carries document id, source path, heading path, chunk index, content "
        "hash, model, backend and dimension; the collection refuses another model's or backend's vectors. The same "
        "run keeps the collection's BM25 index (hybrid search) in exact sync with the chunks.",
        kinds={"python", "chromadb"},
        deps=[CHUNK_EMBEDDINGS],
        pool=DUCKDB_POOL,  # reads the warehouse, which a writer in another run holds exclusively
        **_COMMON,
    )
    def vector_collection(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, chroma: VectorStore, embedder: Embedder
    ):
        name, backend = context.partition_key, embedder.backend
        records = vector_records(warehouse, name)
        others = sorted({r.metadata["backend"] for r in records} - {backend})
        if others:
            raise ModelMismatch(f"collection {name!r}: chunk_embeddings holds {others} vectors, not {backend!r} ones")
        try:
            collection, rebuilt = chroma.collection(name, backend), False
        except ModelMismatch as mismatch:
            # Every vector here is of the configured backend (checked above): the collection is re-embedded.
            context.log.warning(f"{mismatch}; every chunk was re-embedded on {backend}, so the collection is rebuilt")
            collection, rebuilt = chroma.collection(name, backend, rebuild=True), True
        started = time.perf_counter()

        def progress(stage: str, done: int, total: int) -> None:
            context.log.info(f"{stage}: {done}/{total} vectors")

        report = sync_collection(collection, records, progress=progress)
        lexical = chroma.sync_lexical(name, lexical_entries(records))
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(records),
                "added": report.added,
                "updated": report.updated,
                "deleted": report.deleted,
                "unchanged": report.unchanged,
                "writes": report.writes,
                "no_op": report.writes == 0 and lexical.writes == 0,
                "rebuilt": rebuilt,
                "backend": backend,
                "lexical_added": lexical.added,
                "lexical_updated": lexical.updated,
                "lexical_deleted": lexical.deleted,
                "lexical_version": lexical.version,
                "sync_seconds": round(time.perf_counter() - started, 3),
                "store": chroma.location,
            }
        )

    # graph_asset takes no freshness policy of its own.
    chunk_embeddings = chunk_embeddings.map_asset_specs(
        lambda spec: spec.replace_attributes(freshness_policy=DOCS_FRESHNESS)
    )
    return [raw_documents, document_chunks, chunk_embeddings, vector_collection]


def _documents(raw: pl.DataFrame) -> list[documents.Document]:
    fields = documents.Document.__dataclass_fields__
    return [documents.Document(**{k: v for k, v in row.items() if k in fields}) for row in raw.iter_rows(named=True)]


def _backend_column(columns: set[str]) -> str:
    """SQL for a `chunk_embeddings` row's backend, given the table's columns: tables written before backends existed
    hold torch vectors."""
    return f"coalesce({'e.backend' if 'backend' in columns else 'null'}, '{LEGACY_BACKEND}')"


def _cached_vectors(warehouse: DuckDBResource, model: str, backend: str, hashes: list[str]) -> pl.DataFrame:
    columns = table_columns(warehouse, CHUNK_EMBEDDINGS)
    if not hashes or not columns:
        return pl.DataFrame(schema=VECTOR_SCHEMA)
    found = query(
        warehouse,
        f"select content_hash, any_value(embedding) as embedding from main.{CHUNK_EMBEDDINGS} e "
        f"where model = ? and {_backend_column(columns)} = ? and content_hash in (select unnest(?)) "
        "group by content_hash",
        [model, backend, hashes],
    )
    return found.cast(VECTOR_SCHEMA)


def vector_records(warehouse: DuckDBResource, collection: str) -> list[VectorRecord]:
    rows = query(
        warehouse,
        f"""
        select c.chunk_id, c.text, c.doc_id, d.path, d.content_hash as doc_hash, c.heading_path, c.index,
               c.content_hash, e.embedding, {_backend_column(table_columns(warehouse, CHUNK_EMBEDDINGS))} as backend
        from main.{DOCUMENT_CHUNKS} c
        join main.{RAW_DOCUMENTS} d on d.collection = c.collection and d.doc_id = c.doc_id
        join main.{CHUNK_EMBEDDINGS} e on e.collection = c.collection and e.chunk_id = c.chunk_id
        where c.collection = ?
        order by c.chunk_id
        """,
        [collection],
    )
    return [
        VectorRecord(
            id=row["chunk_id"],
            embedding=np.asarray(row["embedding"], dtype=np.float32),
            document=row["text"],
            metadata={
                "doc_id": row["doc_id"],
                "source_path": row["path"],
                "doc_hash": row["doc_hash"],
                "heading_path": retrieval.HEADING_SEPARATOR.join(row["heading_path"]),
                "chunk_index": row["index"],
                "content_hash": row["content_hash"],
                "model": embedding.MODEL_NAME,
                "backend": row["backend"],
                "dimension": embedding.DIMENSION,
            },
        )
        for row in rows.iter_rows(named=True)
    ]


def lexical_entries(records: list[VectorRecord]) -> list[LexicalEntry]:
    """What the collection's BM25 index holds: each chunk's id, content hash and text."""
    return [LexicalEntry(r.id, str(r.metadata["content_hash"]), r.document) for r in records]
